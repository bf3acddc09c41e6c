// Runs in every test file before its tests (vitest setupFiles). Its afterAll
// is registered first, so with vitest's stacked hooks it runs last: after the
// file's own afterAll hooks have stopped what they started.
import { afterAll } from 'vitest';
import { removeMadeDirs } from './cluster.js';

afterAll(removeMadeDirs);
