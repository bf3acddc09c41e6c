// preadv2/pwritev2 with RWF_NOWAIT: positional file I/O that the kernel
// completes only if it can without waiting (data in the page cache, no
// dirty throttling, no lock contention) and otherwise refuses with EAGAIN.
// Lets the event loop serve page-cache hits inline, without a thread-pool
// round trip, and hand everything else to the pool: the loop never waits
// on a disk.
//
// read(fd, buf, off, len, pos) / write(fd, buf, off, len, pos) return the
// byte count (possibly short), or -errno (-EAGAIN: would block; -EOPNOTSUPP:
// the file system does not support it for this file).
#define _GNU_SOURCE
#include <errno.h>
#include <sys/uio.h>
#include <node_api.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

static napi_value io(napi_env env, napi_callback_info info, int is_write) {
  size_t argc = 5;
  napi_value argv[5];
  napi_value ret;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5) {
    napi_throw_type_error(env, NULL, "expected (fd, buffer, offset, length, position)");
    return NULL;
  }
  int32_t fd;
  void *data;
  size_t buflen;
  int64_t off, len, pos;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &data, &buflen) != napi_ok ||
      napi_get_value_int64(env, argv[2], &off) != napi_ok ||
      napi_get_value_int64(env, argv[3], &len) != napi_ok ||
      napi_get_value_int64(env, argv[4], &pos) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected (fd: number, buffer: Buffer, offset: number, length: number, position: number)");
    return NULL;
  }
  if (off < 0 || len < 0 || pos < 0 || (uint64_t)off + (uint64_t)len > buflen) {
    napi_throw_range_error(env, NULL, "offset/length outside the buffer");
    return NULL;
  }
  struct iovec iov = { (char *)data + off, (size_t)len };
  ssize_t n;
  do {
    n = is_write ? pwritev2(fd, &iov, 1, pos, RWF_NOWAIT) : preadv2(fd, &iov, 1, pos, RWF_NOWAIT);
  } while (n < 0 && errno == EINTR);
  napi_create_int64(env, n < 0 ? -(int64_t)errno : (int64_t)n, &ret);
  return ret;
}

static napi_value do_read(napi_env env, napi_callback_info info) { return io(env, info, 0); }
static napi_value do_write(napi_env env, napi_callback_info info) { return io(env, info, 1); }

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    { "read", NULL, do_read, NULL, NULL, NULL, napi_default, NULL },
    { "write", NULL, do_write, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}
