// Object versions, kept in an extended attribute of each object file
// (user.sheepdog.version, a little-endian u32: the epoch of the write that
// last changed the object). An attribute is renamed along with its file and
// is set on a new object's temporary file before the rename that publishes
// it, so a copy and its version appear and move together.
//
// The attribute may carry, after the version, the object's size (a u32):
// then the file holds the object's bytes and, from that offset on, its
// block checksums (see store/checksums.ts).
//
// getVersion(pathOrFd) -> version (0: the file has none), or -errno
// setVersion(pathOrFd, version) -> 0, or -errno (the size, if any, kept)
// getObjectSize(pathOrFd) -> size (0: no checksums), or -errno
// setMeta(pathOrFd, version, size) -> 0, or -errno
//   Plain syscalls on cached inodes: cheap enough for the loop. A version
//   reaches the disk with the file's next fsync (not fdatasync).
#include <node_api.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/xattr.h>

static const char *NAME = "user.sheepdog.version";

static int target(napi_env env, napi_value v, int *fd, char *path, size_t cap) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_number) {
    *fd = -1;
    return napi_get_value_int32(env, v, fd) == napi_ok && *fd >= 0 ? 0 : -1;
  }
  size_t len;
  if (t != napi_string || napi_get_value_string_utf8(env, v, path, cap, &len) != napi_ok || len >= cap - 1) return -1;
  *fd = -1;
  return 0;
}

static napi_value num(napi_env env, int64_t n) {
  napi_value r;
  napi_create_int64(env, n, &r);
  return r;
}

static ssize_t read_attr(int fd, const char *path, uint8_t *b, size_t cap) {
  return fd >= 0 ? fgetxattr(fd, NAME, b, cap) : getxattr(path, NAME, b, cap);
}

static uint32_t u32(const uint8_t *b) {
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void put32(uint8_t *b, uint32_t v) {
  b[0] = v & 0xff; b[1] = (v >> 8) & 0xff; b[2] = (v >> 16) & 0xff; b[3] = (v >> 24) & 0xff;
}

static napi_value get_field(napi_env env, napi_callback_info info, int which) {
  size_t argc = 1;
  napi_value argv[1];
  int fd;
  char path[4096];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || target(env, argv[0], &fd, path, sizeof path)) {
    napi_throw_type_error(env, NULL, "expected (path: string | fd: number)");
    return NULL;
  }
  uint8_t b[8];
  ssize_t n = read_attr(fd, path, b, sizeof b);
  if (n < 0) return num(env, errno == ENODATA ? 0 : -(int64_t)errno);
  if (which == 0) return num(env, n >= 4 ? u32(b) : 0);
  return num(env, n >= 8 ? u32(b + 4) : 0);
}

static napi_value get_version(napi_env env, napi_callback_info info) { return get_field(env, info, 0); }
static napi_value get_object_size(napi_env env, napi_callback_info info) { return get_field(env, info, 1); }

static napi_value set_version(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int fd;
  char path[4096];
  uint32_t v, size = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || target(env, argv[0], &fd, path, sizeof path) ||
      napi_get_value_uint32(env, argv[1], &v) != napi_ok || (argc > 2 && napi_get_value_uint32(env, argv[2], &size) != napi_ok)) {
    napi_throw_type_error(env, NULL, "setVersion(path | fd, version) / setMeta(path | fd, version, size)");
    return NULL;
  }
  uint8_t b[8];
  size_t len = 4;
  if (argc > 2) {
    len = 8;
  } else {
    // keep the size a checksummed object carries
    ssize_t n = read_attr(fd, path, b, sizeof b);
    if (n >= 8) { len = 8; size = u32(b + 4); }
  }
  put32(b, v);
  put32(b + 4, size);
  int r = fd >= 0 ? fsetxattr(fd, NAME, b, len, 0) : setxattr(path, NAME, b, len, 0);
  return num(env, r < 0 ? -(int64_t)errno : 0);
}

// getU64Attr(path, name) -> value, or -errno (-ENODATA: not set)
// setU64Attr(path, name, value) -> 0, or -errno
//   A u64 LE attribute of any name: md keeps each disk's size in user.md.size
//   on the disk's directory, as upstream does. Values stay below 2^53.
static napi_value get_u64_attr(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char path[4096], name[256];
  size_t len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len >= sizeof path - 1 ||
      napi_get_value_string_utf8(env, argv[1], name, sizeof name, &len) != napi_ok || len >= sizeof name - 1) {
    napi_throw_type_error(env, NULL, "getU64Attr(path, name)");
    return NULL;
  }
  uint8_t b[8];
  ssize_t n = getxattr(path, name, b, sizeof b);
  if (n < 0) return num(env, -(int64_t)errno);
  if (n != 8) return num(env, -(int64_t)EINVAL);
  uint64_t v = (uint64_t)u32(b) | (uint64_t)u32(b + 4) << 32;
  return num(env, (int64_t)v);
}

static napi_value set_u64_attr(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  char path[4096], name[256];
  size_t len;
  int64_t v;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len >= sizeof path - 1 ||
      napi_get_value_string_utf8(env, argv[1], name, sizeof name, &len) != napi_ok || len >= sizeof name - 1 ||
      napi_get_value_int64(env, argv[2], &v) != napi_ok || v < 0) {
    napi_throw_type_error(env, NULL, "setU64Attr(path, name, value)");
    return NULL;
  }
  uint8_t b[8];
  put32(b, (uint32_t)((uint64_t)v & 0xffffffffu));
  put32(b + 4, (uint32_t)((uint64_t)v >> 32));
  return num(env, setxattr(path, name, b, sizeof b, 0) < 0 ? -(int64_t)errno : 0);
}

void xattr_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "getVersion", NULL, get_version, NULL, NULL, NULL, napi_default, NULL },
    { "setVersion", NULL, set_version, NULL, NULL, NULL, napi_default, NULL },
    { "setMeta", NULL, set_version, NULL, NULL, NULL, napi_default, NULL },
    { "getObjectSize", NULL, get_object_size, NULL, NULL, NULL, napi_default, NULL },
    { "getU64Attr", NULL, get_u64_attr, NULL, NULL, NULL, napi_default, NULL },
    { "setU64Attr", NULL, set_u64_attr, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
