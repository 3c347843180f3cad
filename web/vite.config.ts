import { defineConfig } from 'vite'

// The broker serves the bundle at /demo/ (app/api/demo.py), so every asset URL starts there.
export default defineConfig({
  base: '/demo/',
  build: { outDir: 'dist', emptyOutDir: true },
})
