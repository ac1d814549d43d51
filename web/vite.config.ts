// The static page: `npm run build:web` writes web/dist, which any static host can serve (relative URLs).
import { defineConfig } from 'vite';

export default defineConfig({
  root: import.meta.dirname,
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // Dawn's Node binding is only imported in Node (src/gpu/device.ts); the browser has navigator.gpu.
    rollupOptions: { external: ['webgpu'] },
  },
  worker: {
    format: 'es',
    rollupOptions: { external: ['webgpu'] },
  },
});
