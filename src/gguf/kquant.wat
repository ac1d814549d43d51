;; Whole-block quantizers of ggml's Q8_0, Q4_K, Q5_K and Q6_K (ggml-quants.c quantize_row_*_ref, without an
;; importance matrix) in native f32 arithmetic with no fused multiply-adds, every sum in ggml's order, so the bytes
;; are ggml's. Assembled into kquant-wasm.ts by scripts/build-kquant-wasm.mjs (wabt); used by quantize.ts.
;;
;; Speed: the scale searches (make_qkx2_quants, make_qx_quants) run on four groups of a super-block at once, one
;; group per SIMD lane. A group's sums are sequential f32 adds that cannot be reordered, but different groups are
;; independent, so lane g of every vector belongs to group g: the data is transposed first (XT[i] holds element i
;; of the four groups). Per-lane choices (which candidate wins, a group of zeros) are lane masks. Unlike the
;; scalar search, every candidate is scored in full: a candidate whose levels equal the previous one's has the
;; same error and cannot win, and an error sum that already reached the best cannot come back below it (its
;; terms are never negative), so scoring more changes nothing.
;;
;; Calls: q8_0 / q4_K / q5_K / q6_K (x, nblocks, y): nblocks blocks of f32 at byte offset x, their bytes to y, in
;; the block layouts of src/gpu/ggml-types.ts (quantize.ts checks the field offsets used here against them).
;; Memory: [0, 4096) scratch (addresses below); the caller's blocks and output from 4096 on (quantize.ts).
(module
  (memory (export "memory") 8)

  ;; Scratch, in bytes. XT: 32 vectors, element i of 4 groups. WT: their weights (Q4_K/Q5_K) or x² (Q6_K).
  ;; WXT: x³ (Q6_K). LCUR / LBEST: levels (i32 lanes) of the candidate (Q4_K/Q5_K) / of the best so far.
  ;; QSCALE / QMIN: a search's 4 scales and 4 -mins. SCALES / MINS: a super-block's 16 (8) of each, f32.
  ;; LS / LM: the 6-bit scales and mins of Q4_K/Q5_K. LB: the super-block's 256 levels, one byte each.
  (global $XT i32 (i32.const 256))
  (global $WT i32 (i32.const 768))
  (global $WXT i32 (i32.const 1280))
  (global $LCUR i32 (i32.const 1792))
  (global $LBEST i32 (i32.const 2304))
  (global $QSCALE i32 (i32.const 2816))
  (global $QMIN i32 (i32.const 2832))
  (global $SCALES i32 (i32.const 2848))
  (global $MINS i32 (i32.const 2912))
  (global $LS i32 (i32.const 2944))
  (global $LM i32 (i32.const 2952))
  (global $LB i32 (i32.const 3072))

  ;; ggml_compute_fp32_to_fp16: round to nearest even, subnormals and overflow to infinity included.
  (func $f32_to_f16 (param $f f32) (result i32)
    (local $base f32) (local $w i32) (local $shl1 i32) (local $bias i32) (local $bits i32)
    (local.set $base (f32.mul (f32.mul (f32.abs (local.get $f)) (f32.const 0x1p+112)) (f32.const 0x1p-110)))
    (local.set $w (i32.reinterpret_f32 (local.get $f)))
    (local.set $shl1 (i32.add (local.get $w) (local.get $w)))
    (local.set $bias (i32.and (local.get $shl1) (i32.const 0xFF000000)))
    (if (i32.lt_u (local.get $bias) (i32.const 0x71000000)) (then (local.set $bias (i32.const 0x71000000))))
    (local.set $bits (i32.reinterpret_f32 (f32.add
      (f32.reinterpret_i32 (i32.add (i32.shr_u (local.get $bias) (i32.const 1)) (i32.const 0x07800000)))
      (local.get $base))))
    (i32.or
      (i32.shr_u (i32.and (local.get $w) (i32.const 0x80000000)) (i32.const 16))
      (select
        (i32.const 0x7E00)
        (i32.add (i32.and (i32.shr_u (local.get $bits) (i32.const 13)) (i32.const 0x7C00)) (i32.and (local.get $bits) (i32.const 0xFFF)))
        (i32.gt_u (local.get $shl1) (i32.const 0xFF000000)))))

  ;; ggml_compute_fp16_to_fp32.
  (func $f16_to_f32 (param $h i32) (result f32)
    (local $w i32) (local $two i32)
    (local.set $w (i32.shl (local.get $h) (i32.const 16)))
    (local.set $two (i32.add (local.get $w) (local.get $w)))
    (f32.reinterpret_i32 (i32.or
      (i32.and (local.get $w) (i32.const 0x80000000))
      (select
        (i32.reinterpret_f32 (f32.sub (f32.reinterpret_i32 (i32.or (i32.shr_u (local.get $two) (i32.const 17)) (i32.const 0x3F000000))) (f32.const 0.5)))
        (i32.reinterpret_f32 (f32.mul (f32.reinterpret_i32 (i32.add (i32.shr_u (local.get $two) (i32.const 4)) (i32.const 0x70000000))) (f32.const 0x1p-112)))
        (i32.lt_u (local.get $two) (i32.const 0x08000000))))))

  ;; ggml's nearest_int on four lanes: add 1.5·2^23 (rounds to an integer, ties to even), keep the mantissa.
  (func $nearest4 (param $v v128) (result v128)
    (i32x4.sub
      (v128.and (f32x4.add (local.get $v) (v128.const f32x4 12582912 12582912 12582912 12582912)) (v128.const i32x4 0x7FFFFF 0x7FFFFF 0x7FFFFF 0x7FFFFF))
      (v128.const i32x4 0x400000 0x400000 0x400000 0x400000)))

  (func $store_f16 (param $at i32) (param $f f32)
    (i32.store16 (local.get $at) (call $f32_to_f16 (local.get $f))))

  ;; ---- Q8_0: 32 values -> f16 d = amax/127, 32 × int8 roundf(x/d) ----
  (func (export "q8_0") (param $x i32) (param $n i32) (param $y i32)
    (local $b i32) (local $j i32) (local $amax v128) (local $a f32) (local $d f32) (local $id v128)
    (local $v v128) (local $t v128) (local $q0 v128) (local $q1 v128) (local $q2 v128) (local $q3 v128)
    (block $done (loop $block
      (br_if $done (i32.ge_u (local.get $b) (local.get $n)))
      (local.set $amax (f32x4.abs (v128.load (local.get $x))))
      (local.set $j (i32.const 16))
      (loop $max
        (local.set $amax (f32x4.pmax (local.get $amax) (f32x4.abs (v128.load (i32.add (local.get $x) (local.get $j))))))
        (br_if $max (i32.lt_u (local.tee $j (i32.add (local.get $j) (i32.const 16))) (i32.const 128))))
      (local.set $a (f32.max
        (f32.max (f32x4.extract_lane 0 (local.get $amax)) (f32x4.extract_lane 1 (local.get $amax)))
        (f32.max (f32x4.extract_lane 2 (local.get $amax)) (f32x4.extract_lane 3 (local.get $amax)))))
      (local.set $d (f32.div (local.get $a) (f32.const 127)))
      (local.set $id (f32x4.splat (select (f32.div (f32.const 1) (local.get $d)) (f32.const 0) (f32.ne (local.get $d) (f32.const 0)))))
      (call $store_f16 (local.get $y) (local.get $d))
      ;; roundf (halves away from zero) of x·id, 16 values per store
      (local.set $j (i32.const 0))
      (loop $quant
        (local.set $q0 (call $roundf4 (f32x4.mul (v128.load (i32.add (local.get $x) (local.get $j))) (local.get $id))))
        (local.set $q1 (call $roundf4 (f32x4.mul (v128.load offset=16 (i32.add (local.get $x) (local.get $j))) (local.get $id))))
        (local.set $q2 (call $roundf4 (f32x4.mul (v128.load offset=32 (i32.add (local.get $x) (local.get $j))) (local.get $id))))
        (local.set $q3 (call $roundf4 (f32x4.mul (v128.load offset=48 (i32.add (local.get $x) (local.get $j))) (local.get $id))))
        (v128.store offset=2 (i32.add (local.get $y) (i32.shr_u (local.get $j) (i32.const 2)))
          (i8x16.narrow_i16x8_s (i16x8.narrow_i32x4_s (local.get $q0) (local.get $q1)) (i16x8.narrow_i32x4_s (local.get $q2) (local.get $q3))))
        (br_if $quant (i32.lt_u (local.tee $j (i32.add (local.get $j) (i32.const 64))) (i32.const 128))))
      (local.set $x (i32.add (local.get $x) (i32.const 128)))
      (local.set $y (i32.add (local.get $y) (i32.const 34)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $block))))

  ;; C's roundf on four lanes, as int32: trunc(v), plus ±1 where |v - trunc(v)| >= 0.5 (the difference is exact).
  (func $roundf4 (param $v v128) (result v128)
    (local $t v128)
    (local.set $t (f32x4.trunc (local.get $v)))
    (i32x4.trunc_sat_f32x4_s (f32x4.add (local.get $t)
      (v128.and
        (f32x4.ge (f32x4.abs (f32x4.sub (local.get $v) (local.get $t))) (v128.const f32x4 0.5 0.5 0.5 0.5))
        (v128.or (v128.and (local.get $v) (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000)) (v128.const f32x4 1 1 1 1))))))

  ;; ---- make_qkx2_quants on four 32-element groups (XT values, WT weights): levels in [0, nmax] to LBEST,
  ;; scales to QSCALE, -mins to QMIN ----
  (func $qkx2x4 (param $nmax i32) (param $rmin f32) (param $nstep i32)
    (local $o i32) (local $is i32) (local $nmaxf f32)
    (local $x v128) (local $w v128) (local $min v128) (local $max v128) (local $min0 v128) (local $sumW v128) (local $sumX v128)
    (local $iscale v128) (local $scale v128) (local $best v128) (local $diff v128) (local $l v128) (local $lf v128) (local $wl v128)
    (local $sumL v128) (local $sumL2 v128) (local $sumXL v128) (local $D v128) (local $ts v128) (local $tm v128) (local $cur v128)
    (local $win v128) (local $flat v128) (local $range v128) (local $top v128)
    (local $magic v128) (local $mantissa v128) (local $half v128)
    (local.set $magic (v128.const f32x4 12582912 12582912 12582912 12582912))
    (local.set $mantissa (v128.const i32x4 0x7FFFFF 0x7FFFFF 0x7FFFFF 0x7FFFFF))
    (local.set $half (v128.const i32x4 0x400000 0x400000 0x400000 0x400000))
    (local.set $nmaxf (f32.convert_i32_s (local.get $nmax)))
    (local.set $top (i32x4.splat (local.get $nmax)))
    ;; min, max, sum of weights, weighted sum, in element order
    (local.set $min (v128.load (global.get $XT)))
    (local.set $max (local.get $min))
    (local.set $sumW (v128.load (global.get $WT)))
    (local.set $sumX (f32x4.mul (local.get $sumW) (local.get $min)))
    (local.set $o (i32.const 16))
    (loop $scan
      (local.set $x (v128.load (i32.add (global.get $XT) (local.get $o))))
      (local.set $w (v128.load (i32.add (global.get $WT) (local.get $o))))
      (local.set $min (f32x4.pmin (local.get $min) (local.get $x)))
      (local.set $max (f32x4.pmax (local.get $max) (local.get $x)))
      (local.set $sumW (f32x4.add (local.get $sumW) (local.get $w)))
      (local.set $sumX (f32x4.add (local.get $sumX) (f32x4.mul (local.get $w) (local.get $x))))
      (br_if $scan (i32.lt_u (local.tee $o (i32.add (local.get $o) (i32.const 16))) (i32.const 512))))
    ;; if (min > 0) min = 0; a group with max == min is all zero levels
    (local.set $min (v128.andnot (local.get $min) (f32x4.gt (local.get $min) (v128.const f32x4 0 0 0 0))))
    (local.set $min0 (local.get $min))
    (local.set $flat (f32x4.eq (local.get $max) (local.get $min)))
    (local.set $range (f32x4.sub (local.get $max) (local.get $min)))
    ;; the plain scale nmax / (max - min) and its error
    (local.set $iscale (f32x4.div (f32x4.splat (local.get $nmaxf)) (local.get $range)))
    (local.set $scale (f32x4.div (v128.const f32x4 1 1 1 1) (local.get $iscale)))
    (local.set $best (v128.const f32x4 0 0 0 0))
    (local.set $o (i32.const 0))
    (loop $first
      (local.set $x (v128.load (i32.add (global.get $XT) (local.get $o))))
      (local.set $l (i32x4.min_s (i32x4.max_s
        (call $nearest4 (f32x4.mul (local.get $iscale) (f32x4.sub (local.get $x) (local.get $min))))
        (v128.const i32x4 0 0 0 0)) (local.get $top)))
      (v128.store (i32.add (global.get $LBEST) (local.get $o)) (local.get $l))
      (local.set $diff (f32x4.sub (f32x4.add (f32x4.mul (local.get $scale) (f32x4.convert_i32x4_s (local.get $l))) (local.get $min)) (local.get $x)))
      (local.set $best (f32x4.add (local.get $best)
        (f32x4.mul (v128.load (i32.add (global.get $WT) (local.get $o))) (f32x4.mul (local.get $diff) (local.get $diff)))))
      (br_if $first (i32.lt_u (local.tee $o (i32.add (local.get $o) (i32.const 16))) (i32.const 512))))
    ;; candidates iscale = (rmin + 0.1·is + nmax) / (max - min), is = 0..nstep, each from the current min
    (local.set $is (i32.const 0))
    (loop $candidates
      (local.set $iscale (f32x4.div
        (f32x4.splat (f32.add (f32.add (local.get $rmin) (f32.mul (f32.const 0.1) (f32.convert_i32_s (local.get $is)))) (local.get $nmaxf)))
        (f32x4.sub (local.get $max) (local.get $min))))
      (local.set $sumL (v128.const f32x4 0 0 0 0))
      (local.set $sumL2 (v128.const f32x4 0 0 0 0))
      (local.set $sumXL (v128.const f32x4 0 0 0 0))
      (local.set $o (i32.const 0))
      (loop $levels
        (local.set $x (v128.load (i32.add (global.get $XT) (local.get $o))))
        ;; nearest_int written out (this loop is where the time goes)
        (local.set $l (i32x4.min_s (i32x4.max_s
          (i32x4.sub (v128.and
            (f32x4.add (f32x4.mul (local.get $iscale) (f32x4.sub (local.get $x) (local.get $min))) (local.get $magic))
            (local.get $mantissa)) (local.get $half))
          (v128.const i32x4 0 0 0 0)) (local.get $top)))
        (v128.store (i32.add (global.get $LCUR) (local.get $o)) (local.get $l))
        (local.set $lf (f32x4.convert_i32x4_s (local.get $l)))
        (local.set $wl (f32x4.mul (v128.load (i32.add (global.get $WT) (local.get $o))) (local.get $lf)))
        (local.set $sumL (f32x4.add (local.get $sumL) (local.get $wl)))
        (local.set $sumL2 (f32x4.add (local.get $sumL2) (f32x4.mul (local.get $wl) (local.get $lf))))
        (local.set $sumXL (f32x4.add (local.get $sumXL) (f32x4.mul (local.get $wl) (local.get $x))))
        (br_if $levels (i32.lt_u (local.tee $o (i32.add (local.get $o) (i32.const 16))) (i32.const 512))))
      (local.set $D (f32x4.sub (f32x4.mul (local.get $sumW) (local.get $sumL2)) (f32x4.mul (local.get $sumL) (local.get $sumL))))
      (local.set $ts (f32x4.div (f32x4.sub (f32x4.mul (local.get $sumW) (local.get $sumXL)) (f32x4.mul (local.get $sumX) (local.get $sumL))) (local.get $D)))
      (local.set $tm (f32x4.div (f32x4.sub (f32x4.mul (local.get $sumL2) (local.get $sumX)) (f32x4.mul (local.get $sumL) (local.get $sumXL))) (local.get $D)))
      ;; if (this_min > 0) { this_min = 0; this_scale = sum_xl / sum_l2; }
      (local.set $win (f32x4.gt (local.get $tm) (v128.const f32x4 0 0 0 0)))
      (local.set $ts (v128.bitselect (f32x4.div (local.get $sumXL) (local.get $sumL2)) (local.get $ts) (local.get $win)))
      (local.set $tm (v128.andnot (local.get $tm) (local.get $win)))
      (local.set $cur (v128.const f32x4 0 0 0 0))
      (local.set $o (i32.const 0))
      (loop $error
        (local.set $diff (f32x4.sub
          (f32x4.add (f32x4.mul (local.get $ts) (f32x4.convert_i32x4_s (v128.load (i32.add (global.get $LCUR) (local.get $o))))) (local.get $tm))
          (v128.load (i32.add (global.get $XT) (local.get $o)))))
        (local.set $cur (f32x4.add (local.get $cur)
          (f32x4.mul (v128.load (i32.add (global.get $WT) (local.get $o))) (f32x4.mul (local.get $diff) (local.get $diff)))))
        (br_if $error (i32.lt_u (local.tee $o (i32.add (local.get $o) (i32.const 16))) (i32.const 512))))
      ;; D > 0 and a smaller error: this candidate's levels, scale and min
      (local.set $win (v128.and (f32x4.gt (local.get $D) (v128.const f32x4 0 0 0 0)) (f32x4.lt (local.get $cur) (local.get $best))))
      (if (v128.any_true (local.get $win)) (then
        (local.set $o (i32.const 0))
        (loop $keep
          (v128.store (i32.add (global.get $LBEST) (local.get $o)) (v128.bitselect
            (v128.load (i32.add (global.get $LCUR) (local.get $o))) (v128.load (i32.add (global.get $LBEST) (local.get $o))) (local.get $win)))
          (br_if $keep (i32.lt_u (local.tee $o (i32.add (local.get $o) (i32.const 16))) (i32.const 512))))
        (local.set $best (v128.bitselect (local.get $cur) (local.get $best) (local.get $win)))
        (local.set $scale (v128.bitselect (local.get $ts) (local.get $scale) (local.get $win)))
        (local.set $min (v128.bitselect (local.get $tm) (local.get $min) (local.get $win)))))
      (br_if $candidates (i32.le_s (local.tee $is (i32.add (local.get $is) (i32.const 1))) (local.get $nstep))))
    ;; flat groups: levels 0, scale 0, the clamped min
    (if (v128.any_true (local.get $flat)) (then
      (local.set $o (i32.const 0))
      (loop $zero
        (v128.store (i32.add (global.get $LBEST) (local.get $o)) (v128.andnot (v128.load (i32.add (global.get $LBEST) (local.get $o))) (local.get $flat)))
        (br_if $zero (i32.lt_u (local.tee $o (i32.add (local.get $o) (i32.const 16))) (i32.const 512))))
      (local.set $scale (v128.andnot (local.get $scale) (local.get $flat)))
      (local.set $min (v128.bitselect (local.get $min0) (local.get $min) (local.get $flat)))))
    (v128.store (global.get $QSCALE) (local.get $scale))
    (v128.store (global.get $QMIN) (f32x4.neg (local.get $min))))

  ;; Groups 4q..4q+3 of the 8 32-element groups at $x, transposed into XT, with ggml's weights
  ;; av_x + |x|, av_x = sqrt(sum of x² / 32), into WT.
  (func $affine_quad (param $x i32) (param $q i32)
    (local $i i32) (local $g i32) (local $at i32) (local $v v128) (local $s v128) (local $av v128)
    (local.set $at (i32.add (local.get $x) (i32.shl (local.get $q) (i32.const 9))))
    (local.set $s (v128.const f32x4 0 0 0 0))
    (local.set $i (i32.const 0))
    (loop $elements
      (local.set $g (i32.add (local.get $at) (i32.shl (local.get $i) (i32.const 2))))
      (local.set $v (f32x4.replace_lane 3 (f32x4.replace_lane 2 (f32x4.replace_lane 1 (f32x4.splat
        (f32.load (local.get $g)))
        (f32.load offset=128 (local.get $g)))
        (f32.load offset=256 (local.get $g)))
        (f32.load offset=384 (local.get $g))))
      (v128.store (i32.add (global.get $XT) (i32.shl (local.get $i) (i32.const 4))) (local.get $v))
      (local.set $s (f32x4.add (local.get $s) (f32x4.mul (local.get $v) (local.get $v))))
      (br_if $elements (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 32))))
    (local.set $av (f32x4.sqrt (f32x4.div (local.get $s) (v128.const f32x4 32 32 32 32))))
    (local.set $i (i32.const 0))
    (loop $weights
      (v128.store (i32.add (global.get $WT) (local.get $i))
        (f32x4.add (local.get $av) (f32x4.abs (v128.load (i32.add (global.get $XT) (local.get $i))))))
      (br_if $weights (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 16))) (i32.const 512)))))

  ;; Lane levels (LBEST, i32) of groups 4q..4q+3 of size $size to the bytes LB[size·group + i], plus $add.
  (func $levels_to_bytes (param $q i32) (param $size i32) (param $add i32)
    (local $i i32) (local $g i32)
    (local.set $g (i32.const 0))
    (loop $groups
      (local.set $i (i32.const 0))
      (loop $elements
        (i32.store8
          (i32.add (i32.add (global.get $LB) (i32.mul (i32.add (i32.shl (local.get $q) (i32.const 2)) (local.get $g)) (local.get $size))) (local.get $i))
          (i32.add (i32.load (i32.add (global.get $LBEST) (i32.add (i32.shl (local.get $i) (i32.const 4)) (i32.shl (local.get $g) (i32.const 2))))) (local.get $add)))
        (br_if $elements (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (local.get $size))))
      (br_if $groups (i32.lt_u (local.tee $g (i32.add (local.get $g) (i32.const 1))) (i32.const 4)))))

  ;; The shared part of Q4_K and Q5_K for the super-block at $x: scales and mins of its 8 groups from
  ;; make_qkx2_quants, quantized to 6 bits against their maxima; d, dmin and the 12 packed bytes to y[0..16);
  ;; the final levels, from the stored scales, in LB.
  (func $affine_superblock (param $x i32) (param $y i32) (param $nmax i32) (param $rmin f32) (param $nstep i32)
    (local $j i32) (local $q i32) (local $s f32) (local $m f32) (local $maxScale f32) (local $maxMin f32)
    (local $inv f32) (local $invMin f32) (local $ls i32) (local $lm i32) (local $d0 f32) (local $dmin0 f32)
    (local $d v128) (local $dm v128) (local $i i32) (local $at i32) (local $top v128) (local $l0 v128) (local $l1 v128) (local $l2 v128) (local $l3 v128)
    (local.set $q (i32.const 0))
    (loop $quads
      (call $affine_quad (local.get $x) (local.get $q))
      (call $qkx2x4 (local.get $nmax) (local.get $rmin) (local.get $nstep))
      (v128.store (i32.add (global.get $SCALES) (i32.shl (local.get $q) (i32.const 4))) (v128.load (global.get $QSCALE)))
      (v128.store (i32.add (global.get $MINS) (i32.shl (local.get $q) (i32.const 4))) (v128.load (global.get $QMIN)))
      (call $levels_to_bytes (local.get $q) (i32.const 32) (i32.const 0))
      (br_if $quads (i32.lt_u (local.tee $q (i32.add (local.get $q) (i32.const 1))) (i32.const 2))))
    (local.set $j (i32.const 0))
    (loop $maxima
      (local.set $s (f32.load (i32.add (global.get $SCALES) (i32.shl (local.get $j) (i32.const 2)))))
      (local.set $m (f32.load (i32.add (global.get $MINS) (i32.shl (local.get $j) (i32.const 2)))))
      (if (f32.gt (local.get $s) (local.get $maxScale)) (then (local.set $maxScale (local.get $s))))
      (if (f32.gt (local.get $m) (local.get $maxMin)) (then (local.set $maxMin (local.get $m))))
      (br_if $maxima (i32.lt_u (local.tee $j (i32.add (local.get $j) (i32.const 1))) (i32.const 8))))
    (local.set $inv (select (f32.div (f32.const 63) (local.get $maxScale)) (f32.const 0) (f32.gt (local.get $maxScale) (f32.const 0))))
    (local.set $invMin (select (f32.div (f32.const 63) (local.get $maxMin)) (f32.const 0) (f32.gt (local.get $maxMin) (f32.const 0))))
    ;; 6-bit scales and mins (uint8_t, then MIN(63, .)), packed as ggml's Q4_K/Q5_K scales[12]
    (i64.store offset=4 (local.get $y) (i64.const 0))
    (i32.store offset=12 (local.get $y) (i32.const 0))
    (local.set $j (i32.const 0))
    (loop $six_bits
      (local.set $ls (i32.and (i32x4.extract_lane 0 (call $nearest4 (f32x4.splat (f32.mul (local.get $inv) (f32.load (i32.add (global.get $SCALES) (i32.shl (local.get $j) (i32.const 2)))))))) (i32.const 0xFF)))
      (local.set $lm (i32.and (i32x4.extract_lane 0 (call $nearest4 (f32x4.splat (f32.mul (local.get $invMin) (f32.load (i32.add (global.get $MINS) (i32.shl (local.get $j) (i32.const 2)))))))) (i32.const 0xFF)))
      (if (i32.gt_u (local.get $ls) (i32.const 63)) (then (local.set $ls (i32.const 63))))
      (if (i32.gt_u (local.get $lm) (i32.const 63)) (then (local.set $lm (i32.const 63))))
      (i32.store8 (i32.add (global.get $LS) (local.get $j)) (local.get $ls))
      (i32.store8 (i32.add (global.get $LM) (local.get $j)) (local.get $lm))
      (local.set $at (i32.add (local.get $y) (local.get $j)))
      (if (i32.lt_u (local.get $j) (i32.const 4))
        (then
          (i32.store8 offset=4 (local.get $at) (local.get $ls))
          (i32.store8 offset=8 (local.get $at) (local.get $lm)))
        (else
          (i32.store8 offset=8 (local.get $at) (i32.or (i32.and (local.get $ls) (i32.const 0xF)) (i32.shl (i32.and (local.get $lm) (i32.const 0xF)) (i32.const 4))))
          (i32.store8 (local.get $at) (i32.or (i32.load8_u (local.get $at)) (i32.shl (i32.shr_u (local.get $ls) (i32.const 4)) (i32.const 6))))
          (i32.store8 offset=4 (local.get $at) (i32.or (i32.load8_u offset=4 (local.get $at)) (i32.shl (i32.shr_u (local.get $lm) (i32.const 4)) (i32.const 6))))))
      (br_if $six_bits (i32.lt_u (local.tee $j (i32.add (local.get $j) (i32.const 1))) (i32.const 8))))
    (call $store_f16 (local.get $y) (f32.div (local.get $maxScale) (f32.const 63)))
    (call $store_f16 (i32.add (local.get $y) (i32.const 2)) (f32.div (local.get $maxMin) (f32.const 63)))
    (local.set $d0 (call $f16_to_f32 (i32.load16_u (local.get $y))))
    (local.set $dmin0 (call $f16_to_f32 (i32.load16_u offset=2 (local.get $y))))
    ;; final levels nearest_int((x + dm) / d) in [0, nmax], from the stored d·sc and dmin·m; none where d·sc is 0
    (local.set $top (i32x4.splat (local.get $nmax)))
    (local.set $j (i32.const 0))
    (loop $final
      (local.set $s (f32.mul (local.get $d0) (f32.convert_i32_u (i32.load8_u (i32.add (global.get $LS) (local.get $j))))))
      (if (f32.ne (local.get $s) (f32.const 0)) (then
        (local.set $d (f32x4.splat (local.get $s)))
        (local.set $dm (f32x4.splat (f32.mul (local.get $dmin0) (f32.convert_i32_u (i32.load8_u (i32.add (global.get $LM) (local.get $j)))))))
        (local.set $i (i32.const 0))
        (loop $sixteen
          (local.set $at (i32.add (local.get $x) (i32.shl (i32.add (i32.shl (local.get $j) (i32.const 5)) (local.get $i)) (i32.const 2))))
          (local.set $l0 (call $nearest4 (f32x4.div (f32x4.add (v128.load (local.get $at)) (local.get $dm)) (local.get $d))))
          (local.set $l1 (call $nearest4 (f32x4.div (f32x4.add (v128.load offset=16 (local.get $at)) (local.get $dm)) (local.get $d))))
          (local.set $l2 (call $nearest4 (f32x4.div (f32x4.add (v128.load offset=32 (local.get $at)) (local.get $dm)) (local.get $d))))
          (local.set $l3 (call $nearest4 (f32x4.div (f32x4.add (v128.load offset=48 (local.get $at)) (local.get $dm)) (local.get $d))))
          (v128.store (i32.add (global.get $LB) (i32.add (i32.shl (local.get $j) (i32.const 5)) (local.get $i)))
            (i8x16.narrow_i16x8_u
              (i16x8.narrow_i32x4_u
                (i32x4.min_s (i32x4.max_s (local.get $l0) (v128.const i32x4 0 0 0 0)) (local.get $top))
                (i32x4.min_s (i32x4.max_s (local.get $l1) (v128.const i32x4 0 0 0 0)) (local.get $top)))
              (i16x8.narrow_i32x4_u
                (i32x4.min_s (i32x4.max_s (local.get $l2) (v128.const i32x4 0 0 0 0)) (local.get $top))
                (i32x4.min_s (i32x4.max_s (local.get $l3) (v128.const i32x4 0 0 0 0)) (local.get $top)))))
          (br_if $sixteen (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 16))) (i32.const 32))))))
      (br_if $final (i32.lt_u (local.tee $j (i32.add (local.get $j) (i32.const 1))) (i32.const 8)))))

  ;; ---- Q4_K: d, dmin, scales[12], then qs[128]: per 64 levels, the first 32 low nibbles, the next 32 high ----
  (func (export "q4_K") (param $x i32) (param $n i32) (param $y i32)
    (local $b i32) (local $j i32) (local $l i32) (local $at i32)
    (block $done (loop $block
      (br_if $done (i32.ge_u (local.get $b) (local.get $n)))
      (call $affine_superblock (local.get $x) (local.get $y) (i32.const 15) (f32.const -1) (i32.const 20))
      (local.set $j (i32.const 0))
      (loop $pack
        (local.set $l (i32.const 0))
        (loop $halves
          (local.set $at (i32.add (global.get $LB) (i32.add (local.get $j) (local.get $l))))
          (v128.store offset=16 (i32.add (local.get $y) (i32.add (i32.shr_u (local.get $j) (i32.const 1)) (local.get $l)))
            (v128.or (v128.load (local.get $at)) (i8x16.shl (v128.load offset=32 (local.get $at)) (i32.const 4))))
          (br_if $halves (i32.lt_u (local.tee $l (i32.add (local.get $l) (i32.const 16))) (i32.const 32))))
        (br_if $pack (i32.lt_u (local.tee $j (i32.add (local.get $j) (i32.const 64))) (i32.const 256))))
      (local.set $x (i32.add (local.get $x) (i32.const 1024)))
      (local.set $y (i32.add (local.get $y) (i32.const 144)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $block))))

  ;; ---- Q5_K: d, dmin, scales[12], qh[32] (bit 2k / 2k+1 of qh[j]: the 5th bit of level 64k+j / 64k+32+j),
  ;; qs[128] low nibbles as Q4_K ----
  (func (export "q5_K") (param $x i32) (param $n i32) (param $y i32)
    (local $b i32) (local $k i32) (local $l i32) (local $at i32) (local $lo v128) (local $hi v128) (local $qh v128)
    (local $low4 v128)
    (local.set $low4 (v128.const i8x16 15 15 15 15 15 15 15 15 15 15 15 15 15 15 15 15))
    (block $done (loop $block
      (br_if $done (i32.ge_u (local.get $b) (local.get $n)))
      (call $affine_superblock (local.get $x) (local.get $y) (i32.const 31) (f32.const -0.5) (i32.const 15))
      (local.set $l (i32.const 0))
      (loop $halves
        (local.set $qh (v128.const i32x4 0 0 0 0))
        (local.set $k (i32.const 0))
        (loop $quarters
          (local.set $at (i32.add (global.get $LB) (i32.add (i32.shl (local.get $k) (i32.const 6)) (local.get $l))))
          (local.set $lo (v128.load (local.get $at)))
          (local.set $hi (v128.load offset=32 (local.get $at)))
          (local.set $qh (v128.or (local.get $qh) (v128.or
            (i8x16.shl (i8x16.shr_u (local.get $lo) (i32.const 4)) (i32.shl (local.get $k) (i32.const 1)))
            (i8x16.shl (i8x16.shr_u (local.get $hi) (i32.const 4)) (i32.add (i32.shl (local.get $k) (i32.const 1)) (i32.const 1))))))
          (v128.store offset=48 (i32.add (local.get $y) (i32.add (i32.shl (local.get $k) (i32.const 5)) (local.get $l)))
            (v128.or (v128.and (local.get $lo) (local.get $low4)) (i8x16.shl (v128.and (local.get $hi) (local.get $low4)) (i32.const 4))))
          (br_if $quarters (i32.lt_u (local.tee $k (i32.add (local.get $k) (i32.const 1))) (i32.const 4))))
        (v128.store offset=16 (i32.add (local.get $y) (local.get $l)) (local.get $qh))
        (br_if $halves (i32.lt_u (local.tee $l (i32.add (local.get $l) (i32.const 16))) (i32.const 32))))
      (local.set $x (i32.add (local.get $x) (i32.const 1024)))
      (local.set $y (i32.add (local.get $y) (i32.const 176)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $block))))

  ;; ---- make_qx_quants (nmax 32, rmse_type 1, no weights: x² as weights) on four 16-element groups (XT values,
  ;; WT x², WXT x³): levels + 32 to LBEST (0 for a group of zeros), scales to QSCALE ----
  (func $qx4
    (local $o i32) (local $is i32) (local $x v128) (local $ax v128) (local $amax v128) (local $max v128) (local $m v128)
    (local $iscale v128) (local $l v128) (local $lf v128) (local $sumLX v128) (local $sumL2 v128) (local $scale v128)
    (local $best v128) (local $win v128) (local $tiny v128)
    (local $magic v128) (local $mantissa v128) (local $half v128) (local $lo v128) (local $hi v128)
    (local.set $magic (v128.const f32x4 12582912 12582912 12582912 12582912))
    (local.set $mantissa (v128.const i32x4 0x7FFFFF 0x7FFFFF 0x7FFFFF 0x7FFFFF))
    (local.set $half (v128.const i32x4 0x400000 0x400000 0x400000 0x400000))
    (local.set $lo (v128.const i32x4 -32 -32 -32 -32))
    (local.set $hi (v128.const i32x4 31 31 31 31))
    (local.set $amax (v128.const f32x4 0 0 0 0))
    (local.set $max (v128.const f32x4 0 0 0 0))
    (local.set $o (i32.const 0))
    (loop $scan
      (local.set $x (v128.load (i32.add (global.get $XT) (local.get $o))))
      (local.set $ax (f32x4.abs (local.get $x)))
      (local.set $m (f32x4.gt (local.get $ax) (local.get $amax)))
      (local.set $amax (v128.bitselect (local.get $ax) (local.get $amax) (local.get $m)))
      (local.set $max (v128.bitselect (local.get $x) (local.get $max) (local.get $m)))
      (br_if $scan (i32.lt_u (local.tee $o (i32.add (local.get $o) (i32.const 16))) (i32.const 256))))
    ;; GROUP_MAX_EPS
    (local.set $tiny (f32x4.lt (local.get $amax) (v128.const f32x4 1e-15 1e-15 1e-15 1e-15)))
    ;; the plain scale -nmax / max
    (local.set $iscale (f32x4.div (v128.const f32x4 -32 -32 -32 -32) (local.get $max)))
    (local.set $sumLX (v128.const f32x4 0 0 0 0))
    (local.set $sumL2 (v128.const f32x4 0 0 0 0))
    (local.set $o (i32.const 0))
    (loop $first
      (local.set $l (i32x4.min_s (i32x4.max_s
        (call $nearest4 (f32x4.mul (local.get $iscale) (v128.load (i32.add (global.get $XT) (local.get $o)))))
        (v128.const i32x4 -32 -32 -32 -32)) (v128.const i32x4 31 31 31 31)))
      (v128.store (i32.add (global.get $LBEST) (local.get $o)) (local.get $l))
      (local.set $lf (f32x4.convert_i32x4_s (local.get $l)))
      (local.set $sumLX (f32x4.add (local.get $sumLX) (f32x4.mul (v128.load (i32.add (global.get $WXT) (local.get $o))) (local.get $lf))))
      (local.set $sumL2 (f32x4.add (local.get $sumL2) (f32x4.mul (f32x4.mul (v128.load (i32.add (global.get $WT) (local.get $o))) (local.get $lf)) (local.get $lf))))
      (br_if $first (i32.lt_u (local.tee $o (i32.add (local.get $o) (i32.const 16))) (i32.const 256))))
    (local.set $scale (v128.and (f32x4.div (local.get $sumLX) (local.get $sumL2)) (f32x4.ne (local.get $sumL2) (v128.const f32x4 0 0 0 0))))
    (local.set $best (f32x4.mul (local.get $scale) (local.get $sumLX)))
    ;; candidates iscale = -(nmax + 0.1·is) / max, is = -9..9 but 0
    (local.set $is (i32.const -9))
    (loop $candidates
      (if (local.get $is) (then
        (local.set $iscale (f32x4.div
          (f32x4.splat (f32.neg (f32.add (f32.const 32) (f32.mul (f32.const 0.1) (f32.convert_i32_s (local.get $is))))))
          (local.get $max)))
        (local.set $sumLX (v128.const f32x4 0 0 0 0))
        (local.set $sumL2 (v128.const f32x4 0 0 0 0))
        (local.set $o (i32.const 0))
        (loop $levels
          ;; nearest_int written out (this loop is where the time goes); the levels are not kept (remade on a win)
          (local.set $l (i32x4.min_s (i32x4.max_s
            (i32x4.sub (v128.and
              (f32x4.add (f32x4.mul (local.get $iscale) (v128.load (i32.add (global.get $XT) (local.get $o)))) (local.get $magic))
              (local.get $mantissa)) (local.get $half))
            (local.get $lo)) (local.get $hi)))
          (local.set $lf (f32x4.convert_i32x4_s (local.get $l)))
          (local.set $sumLX (f32x4.add (local.get $sumLX) (f32x4.mul (v128.load (i32.add (global.get $WXT) (local.get $o))) (local.get $lf))))
          (local.set $sumL2 (f32x4.add (local.get $sumL2) (f32x4.mul (f32x4.mul (v128.load (i32.add (global.get $WT) (local.get $o))) (local.get $lf)) (local.get $lf))))
          (br_if $levels (i32.lt_u (local.tee $o (i32.add (local.get $o) (i32.const 16))) (i32.const 256))))
        ;; suml2 > 0 && sumlx² > best·suml2
        (local.set $win (v128.and
          (f32x4.gt (local.get $sumL2) (v128.const f32x4 0 0 0 0))
          (f32x4.gt (f32x4.mul (local.get $sumLX) (local.get $sumLX)) (f32x4.mul (local.get $best) (local.get $sumL2)))))
        (if (v128.any_true (local.get $win)) (then
          (local.set $o (i32.const 0))
          (loop $keep
            (v128.store (i32.add (global.get $LBEST) (local.get $o)) (v128.bitselect
              (i32x4.min_s (i32x4.max_s
                (call $nearest4 (f32x4.mul (local.get $iscale) (v128.load (i32.add (global.get $XT) (local.get $o)))))
                (local.get $lo)) (local.get $hi))
              (v128.load (i32.add (global.get $LBEST) (local.get $o))) (local.get $win)))
            (br_if $keep (i32.lt_u (local.tee $o (i32.add (local.get $o) (i32.const 16))) (i32.const 256))))
          (local.set $scale (v128.bitselect (f32x4.div (local.get $sumLX) (local.get $sumL2)) (local.get $scale) (local.get $win)))
          (local.set $best (v128.bitselect (f32x4.mul (local.get $scale) (local.get $sumLX)) (local.get $best) (local.get $win)))))))
      (br_if $candidates (i32.le_s (local.tee $is (i32.add (local.get $is) (i32.const 1))) (i32.const 9))))
    ;; levels + nmax; a group of zeros has levels 0 and scale 0
    (local.set $o (i32.const 0))
    (loop $offset
      (v128.store (i32.add (global.get $LBEST) (local.get $o))
        (v128.andnot (i32x4.add (v128.load (i32.add (global.get $LBEST) (local.get $o))) (v128.const i32x4 32 32 32 32)) (local.get $tiny)))
      (br_if $offset (i32.lt_u (local.tee $o (i32.add (local.get $o) (i32.const 16))) (i32.const 256))))
    (v128.store (global.get $QSCALE) (v128.andnot (local.get $scale) (local.get $tiny))))

  ;; ---- Q6_K: ql[128], qh[64], scales[16] (int8), d ----
  (func (export "q6_K") (param $x i32) (param $n i32) (param $y i32)
    (local $b i32) (local $q i32) (local $i i32) (local $g i32) (local $at i32) (local $v v128)
    (local $s f32) (local $maxScale f32) (local $maxAbs f32) (local $iscale f32) (local $d0 f32) (local $sc i32)
    (local $d v128) (local $l0 v128) (local $l1 v128) (local $l2 v128) (local $l3 v128)
    (local $a v128) (local $bb v128) (local $c v128) (local $e v128) (local $low4 v128) (local $three v128)
    (local.set $low4 (v128.const i8x16 15 15 15 15 15 15 15 15 15 15 15 15 15 15 15 15))
    (block $done (loop $block
      (br_if $done (i32.ge_u (local.get $b) (local.get $n)))
      ;; the 16 groups' searches, four at a time
      (local.set $q (i32.const 0))
      (loop $quads
        (local.set $at (i32.add (local.get $x) (i32.shl (local.get $q) (i32.const 8))))
        (local.set $i (i32.const 0))
        (loop $elements
          (local.set $g (i32.add (local.get $at) (i32.shl (local.get $i) (i32.const 2))))
          (local.set $v (f32x4.replace_lane 3 (f32x4.replace_lane 2 (f32x4.replace_lane 1 (f32x4.splat
            (f32.load (local.get $g)))
            (f32.load offset=64 (local.get $g)))
            (f32.load offset=128 (local.get $g)))
            (f32.load offset=192 (local.get $g))))
          (v128.store (i32.add (global.get $XT) (i32.shl (local.get $i) (i32.const 4))) (local.get $v))
          (local.set $v (f32x4.mul (local.get $v) (local.get $v)))
          (v128.store (i32.add (global.get $WT) (i32.shl (local.get $i) (i32.const 4))) (local.get $v))
          (v128.store (i32.add (global.get $WXT) (i32.shl (local.get $i) (i32.const 4)))
            (f32x4.mul (local.get $v) (v128.load (i32.add (global.get $XT) (i32.shl (local.get $i) (i32.const 4))))))
          (br_if $elements (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 16))))
        (call $qx4)
        (v128.store (i32.add (global.get $SCALES) (i32.shl (local.get $q) (i32.const 4))) (v128.load (global.get $QSCALE)))
        (call $levels_to_bytes (local.get $q) (i32.const 16) (i32.const 0))
        (br_if $quads (i32.lt_u (local.tee $q (i32.add (local.get $q) (i32.const 1))) (i32.const 4))))
      ;; the scale of largest magnitude (the first on ties)
      (local.set $maxScale (f32.const 0))
      (local.set $maxAbs (f32.const 0))
      (local.set $i (i32.const 0))
      (loop $maxima
        (local.set $s (f32.load (i32.add (global.get $SCALES) (i32.shl (local.get $i) (i32.const 2)))))
        (if (f32.gt (f32.abs (local.get $s)) (local.get $maxAbs)) (then
          (local.set $maxAbs (f32.abs (local.get $s)))
          (local.set $maxScale (local.get $s))))
        (br_if $maxima (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 16))))
      (if (f32.lt (local.get $maxAbs) (f32.const 1e-15))
        (then
          ;; all zero (d = fp16(0) = 0)
          (local.set $i (i32.const 0))
          (loop $zero
            (v128.store (i32.add (local.get $y) (local.get $i)) (v128.const i32x4 0 0 0 0))
            (br_if $zero (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 16))) (i32.const 208))))
          (i32.store16 offset=208 (local.get $y) (i32.const 0)))
        (else
          (local.set $iscale (f32.div (f32.const -128) (local.get $maxScale)))
          (call $store_f16 (i32.add (local.get $y) (i32.const 208)) (f32.div (f32.const 1) (local.get $iscale)))
          (local.set $i (i32.const 0))
          (loop $scales
            (local.set $sc (i32x4.extract_lane 0 (call $nearest4 (f32x4.splat (f32.mul (local.get $iscale) (f32.load (i32.add (global.get $SCALES) (i32.shl (local.get $i) (i32.const 2)))))))))
            (if (i32.gt_s (local.get $sc) (i32.const 127)) (then (local.set $sc (i32.const 127))))
            (i32.store8 offset=192 (i32.add (local.get $y) (local.get $i)) (local.get $sc))
            (br_if $scales (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 16))))
          (local.set $d0 (call $f16_to_f32 (i32.load16_u offset=208 (local.get $y))))
          ;; final levels nearest_int(x / d) in [-32, 31], + 32; none where d·sc is 0
          (local.set $i (i32.const 0))
          (loop $final
            (local.set $s (f32.mul (local.get $d0) (f32.convert_i32_s (i32.load8_s offset=192 (i32.add (local.get $y) (local.get $i))))))
            (if (f32.ne (local.get $s) (f32.const 0)) (then
              (local.set $d (f32x4.splat (local.get $s)))
              (local.set $at (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 6))))
              (local.set $l0 (i32x4.min_s (i32x4.max_s (call $nearest4 (f32x4.div (v128.load (local.get $at)) (local.get $d))) (v128.const i32x4 -32 -32 -32 -32)) (v128.const i32x4 31 31 31 31)))
              (local.set $l1 (i32x4.min_s (i32x4.max_s (call $nearest4 (f32x4.div (v128.load offset=16 (local.get $at)) (local.get $d))) (v128.const i32x4 -32 -32 -32 -32)) (v128.const i32x4 31 31 31 31)))
              (local.set $l2 (i32x4.min_s (i32x4.max_s (call $nearest4 (f32x4.div (v128.load offset=32 (local.get $at)) (local.get $d))) (v128.const i32x4 -32 -32 -32 -32)) (v128.const i32x4 31 31 31 31)))
              (local.set $l3 (i32x4.min_s (i32x4.max_s (call $nearest4 (f32x4.div (v128.load offset=48 (local.get $at)) (local.get $d))) (v128.const i32x4 -32 -32 -32 -32)) (v128.const i32x4 31 31 31 31)))
              (v128.store (i32.add (global.get $LB) (i32.shl (local.get $i) (i32.const 4)))
                (i8x16.narrow_i16x8_u
                  (i16x8.narrow_i32x4_u
                    (i32x4.add (local.get $l0) (v128.const i32x4 32 32 32 32))
                    (i32x4.add (local.get $l1) (v128.const i32x4 32 32 32 32)))
                  (i16x8.narrow_i32x4_u
                    (i32x4.add (local.get $l2) (v128.const i32x4 32 32 32 32))
                    (i32x4.add (local.get $l3) (v128.const i32x4 32 32 32 32)))))))
            (br_if $final (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 16))))
          ;; ql: low nibbles of levels j+l (low) and j+l+64 (high); qh: the 2 high bits of j+l, +32, +64, +96
          (local.set $g (i32.const 0))
          (loop $halves
            (local.set $i (i32.const 0))
            (loop $sixteens
              (local.set $at (i32.add (global.get $LB) (i32.add (i32.shl (local.get $g) (i32.const 7)) (local.get $i))))
              (local.set $a (v128.load (local.get $at)))
              (local.set $bb (v128.load offset=32 (local.get $at)))
              (local.set $c (v128.load offset=64 (local.get $at)))
              (local.set $e (v128.load offset=96 (local.get $at)))
              (local.set $at (i32.add (local.get $y) (i32.add (i32.shl (local.get $g) (i32.const 6)) (local.get $i))))
              (v128.store (local.get $at) (v128.or (v128.and (local.get $a) (local.get $low4)) (i8x16.shl (v128.and (local.get $c) (local.get $low4)) (i32.const 4))))
              (v128.store offset=32 (local.get $at) (v128.or (v128.and (local.get $bb) (local.get $low4)) (i8x16.shl (v128.and (local.get $e) (local.get $low4)) (i32.const 4))))
              (v128.store offset=128 (i32.add (local.get $y) (i32.add (i32.shl (local.get $g) (i32.const 5)) (local.get $i)))
                (v128.or (v128.or (i8x16.shr_u (local.get $a) (i32.const 4)) (i8x16.shl (i8x16.shr_u (local.get $bb) (i32.const 4)) (i32.const 2)))
                  (v128.or (i8x16.shl (i8x16.shr_u (local.get $c) (i32.const 4)) (i32.const 4)) (i8x16.shl (i8x16.shr_u (local.get $e) (i32.const 4)) (i32.const 6)))))
              (br_if $sixteens (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 16))) (i32.const 32))))
            (br_if $halves (i32.lt_u (local.tee $g (i32.add (local.get $g) (i32.const 1))) (i32.const 2))))))
      (local.set $x (i32.add (local.get $x) (i32.const 1024)))
      (local.set $y (i32.add (local.get $y) (i32.const 210)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $block))))
)
