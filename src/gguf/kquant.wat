;; The scale searches of ggml's K-quants (ggml-quants.c, without an importance matrix), in native f32
;; arithmetic with no fused multiply-adds, in ggml's order, so the results are ggml's to the bit.
;; Assembled into kquant-wasm.ts by scripts/build-kquant-wasm.mjs (wabt); used by quantize.ts.
;;
;; Memory: [0, 4) qkx2's second result (-min); [64, 96) the current candidate's levels (Laux), one byte each;
;; from 1024 on, the caller's values, weights and levels (quantize.ts places them).
;;
;; A candidate whose levels equal the previous candidate's is not scored: its sums and so its error are the
;; previous one's, so it cannot do better (and in qx it could only win again with the same levels and scale).
(module
  (memory (export "memory") 1)

  ;; make_qkx2_quants on 32 values at $x with weights at $w: levels in [0, $nmax] to $L (bytes), -min to
  ;; address 0; returns the scale. Candidates' error sums stop once they reach the best error: their terms
  ;; are never negative.
  (func (export "qkx2") (param $x i32) (param $w i32) (param $L i32) (param $nmax i32) (param $rmin f32)
    (param $rdelta f32) (param $nstep i32) (result f32)
    (local $i i32) (local $o i32) (local $l i32) (local $is i32) (local $changed i32)
    (local $v f32) (local $wi f32) (local $min f32) (local $max f32) (local $sumW f32) (local $sumX f32)
    (local $iscale f32) (local $scale f32) (local $bestError f32) (local $diff f32)
    (local $sumL f32) (local $sumL2 f32) (local $sumXL f32) (local $wl f32) (local $D f32)
    (local $thisScale f32) (local $thisMin f32) (local $curError f32) (local $lf f32)
    ;; min, max, sum of weights, weighted sum
    local.get $x f32.load local.tee $min local.set $max
    local.get $w f32.load local.tee $sumW
    local.get $x f32.load f32.mul local.set $sumX
    i32.const 4 local.set $o
    loop $scan
      local.get $x local.get $o i32.add f32.load local.set $v
      local.get $w local.get $o i32.add f32.load local.set $wi
      local.get $v local.get $min local.get $v local.get $min f32.lt select local.set $min
      local.get $v local.get $max local.get $v local.get $max f32.gt select local.set $max
      local.get $sumW local.get $wi f32.add local.set $sumW
      local.get $sumX local.get $wi local.get $v f32.mul f32.add local.set $sumX
      local.get $o i32.const 4 i32.add local.tee $o i32.const 128 i32.lt_u br_if $scan
    end
    f32.const 0 local.get $min local.get $min f32.const 0 f32.gt select local.set $min
    local.get $max local.get $min f32.eq
    if
      i32.const 0 local.set $i
      loop $zero
        local.get $L local.get $i i32.add i32.const 0 i32.store8
        local.get $i i32.const 1 i32.add local.tee $i i32.const 32 i32.lt_u br_if $zero
      end
      i32.const 0 local.get $min f32.neg f32.store
      f32.const 0
      return
    end
    ;; the plain scale and its error
    local.get $nmax f32.convert_i32_s local.get $max local.get $min f32.sub f32.div local.set $iscale
    f32.const 1 local.get $iscale f32.div local.set $scale
    f32.const 0 local.set $bestError
    i32.const 0 local.set $i
    loop $first
      local.get $i i32.const 2 i32.shl local.set $o
      ;; nearest_int(iscale * (x - min)) clamped to [0, nmax]
      local.get $iscale local.get $x local.get $o i32.add f32.load local.get $min f32.sub f32.mul
      f32.const 12582912 f32.add i32.reinterpret_f32 i32.const 0x7fffff i32.and i32.const 0x400000 i32.sub local.set $l
      i32.const 0 local.get $l local.get $l i32.const 0 i32.lt_s select local.set $l
      local.get $nmax local.get $l local.get $l local.get $nmax i32.gt_s select local.set $l
      local.get $L local.get $i i32.add local.get $l i32.store8
      local.get $scale local.get $l f32.convert_i32_s f32.mul local.get $min f32.add
      local.get $x local.get $o i32.add f32.load f32.sub local.set $diff
      local.get $bestError local.get $w local.get $o i32.add f32.load local.get $diff local.get $diff f32.mul f32.mul f32.add
      local.set $bestError
      local.get $i i32.const 1 i32.add local.tee $i i32.const 32 i32.lt_u br_if $first
    end
    ;; candidates iscale = (rmin + rdelta*is + nmax) / (max - min), is = 0..nstep, with the current min
    i32.const 0 local.set $is
    loop $candidates
      local.get $rmin local.get $rdelta local.get $is f32.convert_i32_s f32.mul f32.add
      local.get $nmax f32.convert_i32_s f32.add
      local.get $max local.get $min f32.sub f32.div local.set $iscale
      local.get $is i32.eqz local.set $changed
      ;; levels and their weighted sums in one pass: the sums' f32 add chains hide the level arithmetic
      f32.const 0 local.set $sumL
      f32.const 0 local.set $sumL2
      f32.const 0 local.set $sumXL
      i32.const 0 local.set $i
      loop $levels
        local.get $iscale local.get $x local.get $i i32.const 2 i32.shl i32.add f32.load local.get $min f32.sub f32.mul
        f32.const 12582912 f32.add i32.reinterpret_f32 i32.const 0x7fffff i32.and i32.const 0x400000 i32.sub local.set $l
        i32.const 0 local.get $l local.get $l i32.const 0 i32.lt_s select local.set $l
        local.get $nmax local.get $l local.get $l local.get $nmax i32.gt_s select local.set $l
        local.get $changed local.get $l local.get $i i32.load8_u offset=64 i32.ne i32.or local.set $changed
        local.get $i local.get $l i32.store8 offset=64
        local.get $i i32.const 2 i32.shl local.set $o
        local.get $l f32.convert_i32_s local.set $lf
        local.get $w local.get $o i32.add f32.load local.get $lf f32.mul local.set $wl
        local.get $sumL local.get $wl f32.add local.set $sumL
        local.get $sumL2 local.get $wl local.get $lf f32.mul f32.add local.set $sumL2
        local.get $sumXL local.get $wl local.get $x local.get $o i32.add f32.load f32.mul f32.add local.set $sumXL
        local.get $i i32.const 1 i32.add local.tee $i i32.const 32 i32.lt_u br_if $levels
      end
      local.get $changed
      if
        local.get $sumW local.get $sumL2 f32.mul local.get $sumL local.get $sumL f32.mul f32.sub local.tee $D
        f32.const 0 f32.gt
        if
          local.get $sumW local.get $sumXL f32.mul local.get $sumX local.get $sumL f32.mul f32.sub local.get $D f32.div
          local.set $thisScale
          local.get $sumL2 local.get $sumX f32.mul local.get $sumL local.get $sumXL f32.mul f32.sub local.get $D f32.div
          local.set $thisMin
          local.get $thisMin f32.const 0 f32.gt
          if
            f32.const 0 local.set $thisMin
            local.get $sumXL local.get $sumL2 f32.div local.set $thisScale
          end
          f32.const 0 local.set $curError
          i32.const 0 local.set $i
          block $scored
            loop $error
              local.get $i i32.const 2 i32.shl local.set $o
              local.get $thisScale local.get $i i32.load8_u offset=64 f32.convert_i32_s f32.mul local.get $thisMin f32.add
              local.get $x local.get $o i32.add f32.load f32.sub local.set $diff
              local.get $curError local.get $w local.get $o i32.add f32.load local.get $diff local.get $diff f32.mul f32.mul f32.add
              local.tee $curError local.get $bestError f32.ge br_if $scored
              local.get $i i32.const 1 i32.add local.tee $i i32.const 32 i32.lt_u br_if $error
            end
          end
          local.get $curError local.get $bestError f32.lt
          if
            i32.const 0 local.set $i
            loop $keep
              local.get $L local.get $i i32.add local.get $i i32.load8_u offset=64 i32.store8
              local.get $i i32.const 1 i32.add local.tee $i i32.const 32 i32.lt_u br_if $keep
            end
            local.get $curError local.set $bestError
            local.get $thisScale local.set $scale
            local.get $thisMin local.set $min
          end
        end
      end
      local.get $is i32.const 1 i32.add local.tee $is local.get $nstep i32.le_s br_if $candidates
    end
    i32.const 0 local.get $min f32.neg f32.store
    local.get $scale)

  ;; make_qx_quants with rmse_type 1 and no weights (x² as weights) on 16 values at $x: levels + nmax in
  ;; [0, 2*nmax) to $L (bytes); returns the scale.
  (func (export "qx") (param $x i32) (param $L i32) (param $nmax i32) (result f32)
    (local $i i32) (local $o i32) (local $l i32) (local $is i32) (local $changed i32)
    (local $v f32) (local $ax f32) (local $max f32) (local $amax f32) (local $iscale f32) (local $w f32)
    (local $lf f32) (local $sumLX f32) (local $sumL2 f32) (local $scale f32) (local $best f32)
    i32.const 0 local.set $o
    loop $scan
      local.get $x local.get $o i32.add f32.load local.tee $v f32.abs local.tee $ax local.get $amax f32.gt
      if
        local.get $ax local.set $amax
        local.get $v local.set $max
      end
      local.get $o i32.const 4 i32.add local.tee $o i32.const 64 i32.lt_u br_if $scan
    end
    ;; GROUP_MAX_EPS: an all-zero group
    local.get $amax f32.const 1e-15 f32.lt
    if
      i32.const 0 local.set $i
      loop $zero
        local.get $L local.get $i i32.add i32.const 0 i32.store8
        local.get $i i32.const 1 i32.add local.tee $i i32.const 16 i32.lt_u br_if $zero
      end
      f32.const 0
      return
    end
    ;; the plain scale
    i32.const 0 local.get $nmax i32.sub f32.convert_i32_s local.get $max f32.div local.set $iscale
    i32.const 0 local.set $i
    loop $first
      local.get $iscale local.get $x local.get $i i32.const 2 i32.shl i32.add f32.load local.tee $v f32.mul
      f32.const 12582912 f32.add i32.reinterpret_f32 i32.const 0x7fffff i32.and i32.const 0x400000 i32.sub local.set $l
      i32.const 0 local.get $nmax i32.sub local.get $l local.get $l i32.const 0 local.get $nmax i32.sub i32.lt_s select local.set $l
      local.get $nmax i32.const 1 i32.sub local.get $l local.get $l local.get $nmax i32.ge_s select local.set $l
      local.get $L local.get $i i32.add local.get $l local.get $nmax i32.add i32.store8
      local.get $v local.get $v f32.mul local.set $w
      local.get $l f32.convert_i32_s local.set $lf
      local.get $sumLX local.get $w local.get $v f32.mul local.get $lf f32.mul f32.add local.set $sumLX
      local.get $sumL2 local.get $w local.get $lf f32.mul local.get $lf f32.mul f32.add local.set $sumL2
      local.get $i i32.const 1 i32.add local.tee $i i32.const 16 i32.lt_u br_if $first
    end
    local.get $sumLX local.get $sumL2 f32.div f32.const 0 local.get $sumL2 f32.const 0 f32.ne select local.tee $scale
    local.get $sumLX f32.mul local.set $best
    ;; candidates iscale = -(nmax + 0.1*is) / max, is = -9..9 but 0
    i32.const -9 local.set $is
    loop $candidates
      block $next
        local.get $is i32.eqz br_if $next
        local.get $nmax f32.convert_i32_s f32.const 0.1 local.get $is f32.convert_i32_s f32.mul f32.add f32.neg
        local.get $max f32.div local.set $iscale
        local.get $is i32.const -9 i32.eq local.set $changed
        f32.const 0 local.set $sumLX
        f32.const 0 local.set $sumL2
        i32.const 0 local.set $i
        loop $levels
          local.get $iscale local.get $x local.get $i i32.const 2 i32.shl i32.add f32.load local.tee $v f32.mul
          f32.const 12582912 f32.add i32.reinterpret_f32 i32.const 0x7fffff i32.and i32.const 0x400000 i32.sub local.set $l
          i32.const 0 local.get $nmax i32.sub local.get $l local.get $l i32.const 0 local.get $nmax i32.sub i32.lt_s select local.set $l
          local.get $nmax i32.const 1 i32.sub local.get $l local.get $l local.get $nmax i32.ge_s select local.set $l
          local.get $changed local.get $l local.get $i i32.load8_s offset=64 i32.ne i32.or local.set $changed
          local.get $i local.get $l i32.store8 offset=64
          local.get $v local.get $v f32.mul local.set $w
          local.get $l f32.convert_i32_s local.set $lf
          local.get $sumLX local.get $w local.get $v f32.mul local.get $lf f32.mul f32.add local.set $sumLX
          local.get $sumL2 local.get $w local.get $lf f32.mul local.get $lf f32.mul f32.add local.set $sumL2
          local.get $i i32.const 1 i32.add local.tee $i i32.const 16 i32.lt_u br_if $levels
        end
        local.get $changed i32.eqz br_if $next
        local.get $sumL2 f32.const 0 f32.gt
        local.get $sumLX local.get $sumLX f32.mul local.get $best local.get $sumL2 f32.mul f32.gt
        i32.and
        if
          i32.const 0 local.set $i
          loop $keep
            local.get $L local.get $i i32.add local.get $i i32.load8_s offset=64 local.get $nmax i32.add i32.store8
            local.get $i i32.const 1 i32.add local.tee $i i32.const 16 i32.lt_u br_if $keep
          end
          local.get $sumLX local.get $sumL2 f32.div local.tee $scale local.get $sumLX f32.mul local.set $best
        end
      end
      local.get $is i32.const 1 i32.add local.tee $is i32.const 9 i32.le_s br_if $candidates
    end
    local.get $scale)
)
