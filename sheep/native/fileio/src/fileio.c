// Two ways around libuv's one-request-per-thread-hop file I/O, for the
// object store's hot path:
//
// readNow(fd, buf, off, len, pos)
//   preadv2 with RWF_NOWAIT: the kernel completes the read only if it can
//   without waiting (data in the page cache) and otherwise refuses with
//   EAGAIN. Page-cache hits are served on the event loop in microseconds;
//   everything else goes to the thread pool. The loop never waits on a disk.
//   Returns the byte count (possibly short) or -errno.
//
// writeBatch(fds, bufs, positions, status, callback)
//   Writes every bufs[i] at positions[i] of fds[i] (an Int32Array), in one
//   thread-pool job, in array order: back-to-back ranges of one file as one
//   pwritev, short writes finished, EINTR retried. status[i] (an Int32Array) receives 0 or -errno for each
//   buffer; callback() runs on the loop when all are done. One job per
//   batch costs one thread wake-up instead of one per write.
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <node_api.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

#define MAX_IOV 1024

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

static napi_value read_now(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5)
    return throw_type(env, "readNow(fd, buffer, offset, length, position)");
  int32_t fd;
  void *data;
  size_t buflen;
  int64_t off, len, pos;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &data, &buflen) != napi_ok ||
      napi_get_value_int64(env, argv[2], &off) != napi_ok ||
      napi_get_value_int64(env, argv[3], &len) != napi_ok ||
      napi_get_value_int64(env, argv[4], &pos) != napi_ok)
    return throw_type(env, "readNow(fd: number, buffer: Buffer, offset: number, length: number, position: number)");
  if (off < 0 || len < 0 || pos < 0 || (uint64_t)off + (uint64_t)len > buflen) {
    napi_throw_range_error(env, NULL, "offset/length outside the buffer");
    return NULL;
  }
  struct iovec iov = { (char *)data + off, (size_t)len };
  ssize_t n;
  do n = preadv2(fd, &iov, 1, pos, RWF_NOWAIT);
  while (n < 0 && errno == EINTR);
  napi_value ret;
  napi_create_int64(env, n < 0 ? -(int64_t)errno : (int64_t)n, &ret);
  return ret;
}

struct piece {
  int fd;
  char *data;
  size_t len;
  int64_t pos;
};

struct batch {
  napi_async_work work;
  napi_ref fds_ref;
  napi_ref bufs_ref;   // keeps the buffers alive while the job runs
  napi_ref status_ref;
  napi_ref cb_ref;
  uint32_t n;
  int32_t *status;
  struct piece p[];
};

// Write pieces [first, end), back to back in one file, as few pwritev calls as the kernel allows.
static int write_run(struct piece *p, uint32_t first, uint32_t end) {
  int fd = p[first].fd;
  struct iovec iov[MAX_IOV];
  uint32_t i = first;
  size_t skip = 0; // bytes of p[i] already written
  while (i < end) {
    int cnt = 0;
    for (uint32_t k = i; k < end && cnt < MAX_IOV; k++, cnt++) {
      size_t s = k == i ? skip : 0;
      iov[cnt].iov_base = p[k].data + s;
      iov[cnt].iov_len = p[k].len - s;
    }
    ssize_t w;
    do w = pwritev(fd, iov, cnt, p[i].pos + (int64_t)skip);
    while (w < 0 && errno == EINTR);
    if (w < 0) return -errno;
    if (w == 0) return -EIO;
    size_t left = (size_t)w;
    while (i < end && left >= p[i].len - skip) {
      left -= p[i].len - skip;
      skip = 0;
      i++;
    }
    skip += left;
  }
  return 0;
}

static void batch_execute(napi_env env, void *arg) {
  struct batch *b = arg;
  uint32_t i = 0;
  while (i < b->n) {
    uint32_t end = i + 1;
    while (end < b->n && b->p[end].fd == b->p[end - 1].fd && b->p[end].pos == b->p[end - 1].pos + (int64_t)b->p[end - 1].len) end++;
    int r = write_run(b->p, i, end);
    for (uint32_t k = i; k < end; k++) b->status[k] = r;
    i = end;
  }
}

static void batch_complete(napi_env env, napi_status st, void *arg) {
  struct batch *b = arg;
  napi_value cb, global;
  if (st != napi_ok) for (uint32_t k = 0; k < b->n; k++) b->status[k] = -ECANCELED;
  if (napi_get_reference_value(env, b->cb_ref, &cb) == napi_ok && napi_get_global(env, &global) == napi_ok)
    napi_call_function(env, global, cb, 0, NULL, NULL);
  napi_delete_reference(env, b->cb_ref);
  napi_delete_reference(env, b->fds_ref);
  napi_delete_reference(env, b->bufs_ref);
  napi_delete_reference(env, b->status_ref);
  napi_delete_async_work(env, b->work);
  free(b);
}

static napi_value write_batch(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  const char *usage = "writeBatch(fds: Int32Array, bufs: Buffer[], positions: Float64Array, status: Int32Array, callback: () => void)";
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5) return throw_type(env, usage);
  uint32_t n;
  bool is_array;
  napi_valuetype cbt;
  napi_typedarray_type ft, pt, stt;
  size_t flen, plen, stlen;
  void *fdata, *pdata, *stdata;
  if (napi_get_typedarray_info(env, argv[0], &ft, &flen, &fdata, NULL, NULL) != napi_ok || ft != napi_int32_array ||
      napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &n) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &pt, &plen, &pdata, NULL, NULL) != napi_ok || pt != napi_float64_array ||
      napi_get_typedarray_info(env, argv[3], &stt, &stlen, &stdata, NULL, NULL) != napi_ok || stt != napi_int32_array ||
      napi_typeof(env, argv[4], &cbt) != napi_ok || cbt != napi_function ||
      flen < n || plen < n || stlen < n || n == 0)
    return throw_type(env, usage);
  struct batch *b = calloc(1, sizeof(*b) + n * sizeof(struct piece));
  if (!b) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  b->n = n;
  b->status = stdata;
  const int32_t *fds = fdata;
  const double *pos = pdata;
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    void *d;
    size_t l;
    if (napi_get_element(env, argv[1], i, &e) != napi_ok || napi_get_buffer_info(env, e, &d, &l) != napi_ok || pos[i] < 0) {
      free(b);
      return throw_type(env, usage);
    }
    b->p[i].fd = fds[i];
    b->p[i].data = d;
    b->p[i].len = l;
    b->p[i].pos = (int64_t)pos[i];
  }
  napi_value name;
  napi_create_string_utf8(env, "sheep.writeBatch", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, argv[0], 1, &b->fds_ref) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &b->bufs_ref) != napi_ok ||
      napi_create_reference(env, argv[3], 1, &b->status_ref) != napi_ok ||
      napi_create_reference(env, argv[4], 1, &b->cb_ref) != napi_ok ||
      napi_create_async_work(env, NULL, name, batch_execute, batch_complete, b, &b->work) != napi_ok ||
      napi_queue_async_work(env, b->work) != napi_ok) {
    napi_throw_error(env, NULL, "cannot queue the write batch");
    return NULL; // references leak with b on this path, which does not happen short of memory exhaustion
  }
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    { "readNow", NULL, read_now, NULL, NULL, NULL, napi_default, NULL },
    { "writeBatch", NULL, write_batch, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}
