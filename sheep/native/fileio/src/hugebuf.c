// hugeAlloc(size) -> Buffer
//   Uninitialised memory for large I/O buffers (the buffer pool's), on
//   transparent huge pages where the kernel has them.
//
// Why: every large request copies its bytes between the kernel and a user
// buffer (pread from the page cache, a socket's send or receive). On a
// virtual machine a TLB miss walks two page tables, and a 1 MiB buffer of
// 4 KiB pages takes 256 of them per copy: measured here, a cached 1 MiB
// pread costs 420-570 us into ordinary pages and 100-106 us into a huge
// page (a plain memcpy of 1 MiB: 31 us). Node's allocator gives ordinary
// pages (THP is "madvise" on Debian), so the pool's memory comes from here:
// 2 MiB-aligned mappings marked MADV_HUGEPAGE and faulted in at once
// (MADV_POPULATE_WRITE), so that the first copy into them does not stop
// for page faults. Buffers up to 2 MiB are carved from shared 2 MiB chunks
// (each at an offset aligned to its size when that is a power of two);
// larger ones get mappings of their own. A chunk is unmapped when the last
// Buffer carved from it is collected. Where the kernel has no huge page to
// give, the memory is ordinary pages and works the same.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <pthread.h>
#include <node_api.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define HUGE_SIZE ((size_t)2 << 20)
#define PAGE_SIZE_MIN ((size_t)4096)

struct chunk {
  char *base;
  size_t len;
  size_t used;
  size_t refs; // Buffers carved from it, plus one while it is the current chunk
};

// Buffers may be collected on any thread that has a Node environment (workers): one lock.
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct chunk *current;
// Bytes mapped, and how much of that V8 has been told about: memory it does
// not know of does not make it collect, and a collection is what frees
// chunks whose Buffers are garbage (without this, a burst of large requests
// kept its memory long after the connections closed).
static int64_t mapped, reported;

/** Tell V8 what changed since it was last told (called without the lock). */
static void report(napi_env env) {
  int64_t delta, result;
  pthread_mutex_lock(&mu);
  delta = mapped - reported;
  reported = mapped;
  pthread_mutex_unlock(&mu);
  if (delta) napi_adjust_external_memory(env, delta, &result);
}

static struct chunk *chunk_map(size_t len) {
  size_t span = len + HUGE_SIZE;
  char *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return NULL;
  uintptr_t a = ((uintptr_t)m + HUGE_SIZE - 1) & ~(uintptr_t)(HUGE_SIZE - 1);
  size_t head = a - (uintptr_t)m, tail = span - head - len;
  if (head) munmap(m, head);
  if (tail) munmap((char *)a + len, tail);
  struct chunk *c = malloc(sizeof(*c));
  if (!c) {
    munmap((void *)a, len);
    return NULL;
  }
  // both are hints: without them the memory is ordinary pages, faulted in on first use
  madvise((void *)a, len, MADV_HUGEPAGE);
  madvise((void *)a, len, MADV_POPULATE_WRITE);
  c->base = (char *)a;
  c->len = len;
  mapped += (int64_t)len;
  c->used = 0;
  c->refs = 0;
  return c;
}

static void chunk_put(struct chunk *c) {
  if (--c->refs > 0) return;
  mapped -= (int64_t)c->len;
  munmap(c->base, c->len);
  free(c);
}

static void finalize(napi_env env, void *data, void *hint) {
  pthread_mutex_lock(&mu);
  chunk_put(hint);
  pthread_mutex_unlock(&mu);
  // V8 hears of the release at the next allocation (a finalizer may run inside a collection)
}

static size_t align_for(size_t n) {
  if (n & (n - 1)) return PAGE_SIZE_MIN;
  return n < PAGE_SIZE_MIN ? PAGE_SIZE_MIN : n;
}

/** n bytes at *at of a chunk whose reference the caller now holds, or NULL. */
static struct chunk *carve(size_t n, char **at) {
  struct chunk *c;
  if (n > HUGE_SIZE) {
    c = chunk_map((n + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1));
    if (!c) return NULL;
    c->refs = 1;
    *at = c->base;
    return c;
  }
  size_t al = align_for(n);
  size_t off = current ? (current->used + al - 1) & ~(al - 1) : 0;
  if (!current || off + n > current->len) {
    struct chunk *fresh = chunk_map(HUGE_SIZE);
    if (!fresh) return NULL;
    if (current) chunk_put(current);
    current = fresh;
    current->refs = 1;
    off = 0;
  }
  c = current;
  c->used = off + n;
  c->refs++;
  *at = c->base + off;
  return c;
}

static napi_value huge_alloc(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  double size;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_double(env, argv[0], &size) != napi_ok || !(size >= 1) || size > (double)(1u << 30) || size != (double)(size_t)size) {
    napi_throw_type_error(env, NULL, "hugeAlloc(size: integer from 1 to 2^30)");
    return NULL;
  }
  char *at;
  pthread_mutex_lock(&mu);
  struct chunk *c = carve((size_t)size, &at);
  pthread_mutex_unlock(&mu);
  if (!c) {
    napi_throw_error(env, "ENOMEM", "hugeAlloc: cannot map memory");
    return NULL;
  }
  if (napi_create_external_buffer(env, (size_t)size, at, finalize, c, &out) != napi_ok) {
    pthread_mutex_lock(&mu);
    chunk_put(c);
    pthread_mutex_unlock(&mu);
    napi_throw_error(env, NULL, "hugeAlloc: cannot make a Buffer of the memory");
    return NULL;
  }
  report(env);
  return out;
}

void hugebuf_register(napi_env env, napi_value exports) {
  napi_property_descriptor p = { "hugeAlloc", NULL, huge_alloc, NULL, NULL, NULL, napi_default, NULL };
  napi_define_properties(env, exports, 1, &p);
}
