// Ways around the costs of libuv's file and socket I/O on the object
// store's hot path:
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
//   pwritev, short writes finished, EINTR retried. status[i] (an
//   Int32Array) receives 0 or -errno for each buffer; callback() runs on
//   the loop when all are done. One job per batch costs one thread wake-up
//   instead of one per write. The jobs run on this addon's own writer
//   threads rather than libuv's pool: a pool job costs an async resource
//   and its bookkeeping on submission and a callback scope of its own on
//   completion, and shares the pool's one mutex with every fs request
//   (measured: 4 KiB write batches at queue depth 1, 56 -> 21 us per round
//   trip, 19 -> 12 us of loop CPU). Batches that finish while the loop is
//   busy are delivered together, from one wake-up. A piece may instead be
//   { pipe, length }:
//   length bytes waiting in a pipe (see below), moved into the file with
//   splice.
//
// setWriteChunk(bytes)
//   Writes (pwritev and splice alike) stop at every multiple of bytes of
//   the file (default 256 KiB; 0: no limit), set before any write. Why: the
//   page cache keeps a file range in folios sized by the write that first
//   cached it, and ext4 walks every 4 KiB block of a folio on each write
//   into it. Measured here on one file, a 4 KiB random pwrite costs ~6.4 us
//   into 4 MiB folios (an object written whole), ~4.2 us into 1 MiB ones,
//   ~2.1 us into 256 KiB ones; 1 MiB writes into 256 KiB folios cost
//   ~15% more than into larger ones, and a 1 MiB write split in four costs
//   three more syscalls. Guests mostly write small blocks.
//
// Zero-copy receive of large write payloads: the kernel's copy from a
// socket into user memory is most of the event loop's work for 1 MiB
// writes; splice moves the received pages into a pipe without copying,
// and the write then copies them into the file once, as pwrite would.
//
// pipeOpen(size) -> [readFd, writeFd, capacity]
//   A pipe that holds up to capacity bytes (size, or what the system
//   allows).
//
// splicerOpen(socketFd) -> splicer
// splicerStart(splicer, pipeWriteFd, length, callback) -> 1 | 0 | 2 | -errno
//   Move exactly length bytes from the socket into the pipe, on the loop,
//   never waiting: what is there now moves at once (returns 1 when that was
//   all of it, and callback is not called); the rest as it arrives (returns
//   0; callback(status) follows: 0, or -errno, -ECONNRESET when the peer
//   closed first). 2 (returned, or the callback's status): the pipe is full
//   before the payload is in (a pipe holds a number of pieces, and data
//   that arrived in many small segments takes one each); splicerMoved tells
//   how many bytes it holds, and the rest is still in the socket. The
//   socket's own reading must be stopped meanwhile.
// splicerMoved(splicer) -> bytes moved by the last start
// splicerClose(splicer)
//   Stop (a pending callback gets -ECANCELED) and release it.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/ioctl.h>
#include <pthread.h>
#include <node_api.h>
#include <uv.h>

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
  int pipe;    // >= 0: the bytes come from this pipe, not data
  char *data;
  size_t len;
  int64_t pos;
};

struct batch {
  struct batch *next;
  napi_ref fds_ref;
  napi_ref bufs_ref;   // keeps the buffers alive while the job runs
  napi_ref status_ref;
  napi_ref cb_ref;
  uint32_t n;
  int32_t *status;
  struct piece p[];
};

// Writes stop at multiples of this many bytes of the file (0: no limit); see setWriteChunk.
static int64_t write_chunk = 256 * 1024;

// Bytes a write at pos may take before it reaches the next chunk boundary.
static size_t chunk_room(int64_t pos, size_t want) {
  if (write_chunk <= 0) return want;
  size_t room = (size_t)(write_chunk - pos % write_chunk);
  return want < room ? want : room;
}

// Write pieces [first, end), back to back in one file, as few pwritev calls as the kernel and the chunk limit allow.
static int write_run(struct piece *p, uint32_t first, uint32_t end) {
  int fd = p[first].fd;
  struct iovec iov[MAX_IOV];
  uint32_t i = first;
  size_t skip = 0; // bytes of p[i] already written
  while (i < end) {
    int64_t at = p[i].pos + (int64_t)skip;
    size_t room = chunk_room(at, SIZE_MAX);
    int cnt = 0;
    for (uint32_t k = i; k < end && cnt < MAX_IOV && room > 0; k++, cnt++) {
      size_t s = k == i ? skip : 0;
      size_t l = p[k].len - s < room ? p[k].len - s : room;
      iov[cnt].iov_base = p[k].data + s;
      iov[cnt].iov_len = l;
      room -= l;
    }
    ssize_t w;
    do w = pwritev(fd, iov, cnt, at);
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

// Move a piece's bytes from its pipe into the file.
static int write_from_pipe(struct piece *p) {
  loff_t pos = p->pos;
  size_t left = p->len;
  while (left > 0) {
    ssize_t n = splice(p->pipe, NULL, p->fd, &pos, chunk_room(pos, left), SPLICE_F_MOVE);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) return -EIO; // the pipe held less than promised
    left -= (size_t)n;
  }
  return 0;
}

static void batch_execute(struct batch *b) {
  uint32_t i = 0;
  while (i < b->n) {
    if (b->p[i].pipe >= 0) {
      b->status[i] = write_from_pipe(&b->p[i]);
      i++;
      continue;
    }
    uint32_t end = i + 1;
    while (end < b->n && b->p[end].pipe < 0 && b->p[end].fd == b->p[end - 1].fd && b->p[end].pos == b->p[end - 1].pos + (int64_t)b->p[end - 1].len) end++;
    int r = write_run(b->p, i, end);
    for (uint32_t k = i; k < end; k++) b->status[k] = r;
    i = end;
  }
}

// ---- writer threads ---------------------------------------------------

#define WRITERS 2

static struct {
  pthread_mutex_t mu;
  pthread_cond_t more;
  struct batch *todo, *todo_tail;  // submitted, not started
  struct batch *done, *done_tail;  // written, not yet delivered
  unsigned pending;                // submitted and not yet delivered (loop thread only)
  int running, stopping;
  pthread_t th[WRITERS];
  uv_async_t async;
  napi_env env;
  napi_async_context actx;
  napi_ref resource;
} W = { .mu = PTHREAD_MUTEX_INITIALIZER, .more = PTHREAD_COND_INITIALIZER };

static void *writer_main(void *arg) {
  pthread_mutex_lock(&W.mu);
  for (;;) {
    while (!W.todo && !W.stopping) pthread_cond_wait(&W.more, &W.mu);
    if (W.stopping) break;
    struct batch *b = W.todo;
    W.todo = b->next;
    if (!W.todo) W.todo_tail = NULL;
    pthread_mutex_unlock(&W.mu);
    batch_execute(b);
    pthread_mutex_lock(&W.mu);
    b->next = NULL;
    int wake = W.done == NULL; // else a wake-up is already on its way
    if (W.done_tail) W.done_tail->next = b;
    else W.done = b;
    W.done_tail = b;
    if (wake) {
      pthread_mutex_unlock(&W.mu);
      uv_async_send(&W.async);
      pthread_mutex_lock(&W.mu);
    }
  }
  pthread_mutex_unlock(&W.mu);
  return NULL;
}

// On the loop: the callbacks of every finished batch, in one callback scope
// (the microtasks they queue run when it closes).
static void deliver(uv_async_t *h) {
  pthread_mutex_lock(&W.mu);
  struct batch *b = W.done;
  W.done = W.done_tail = NULL;
  pthread_mutex_unlock(&W.mu);
  if (!b) return;
  napi_env env = W.env;
  napi_handle_scope hs;
  napi_callback_scope cs;
  napi_value resource, global, cb;
  napi_open_handle_scope(env, &hs);
  napi_get_reference_value(env, W.resource, &resource);
  napi_get_global(env, &global);
  napi_open_callback_scope(env, resource, W.actx, &cs);
  while (b) {
    struct batch *next = b->next;
    if (--W.pending == 0) uv_unref((uv_handle_t *)&W.async);
    if (napi_get_reference_value(env, b->cb_ref, &cb) == napi_ok &&
        napi_call_function(env, global, cb, 0, NULL, NULL) == napi_pending_exception) {
      napi_value err;
      napi_get_and_clear_last_exception(env, &err);
      napi_fatal_exception(env, err); // as an exception thrown by any other callback
    }
    napi_delete_reference(env, b->cb_ref);
    napi_delete_reference(env, b->fds_ref);
    napi_delete_reference(env, b->bufs_ref);
    napi_delete_reference(env, b->status_ref);
    free(b);
    b = next;
  }
  napi_close_callback_scope(env, cs);
  napi_close_handle_scope(env, hs);
}

static void writers_stop(void *arg) {
  pthread_mutex_lock(&W.mu);
  W.stopping = 1;
  pthread_cond_broadcast(&W.more);
  pthread_mutex_unlock(&W.mu);
  for (int i = 0; i < WRITERS; i++) pthread_join(W.th[i], NULL);
  uv_close((uv_handle_t *)&W.async, NULL);
}

static int writers_start(napi_env env) {
  uv_loop_t *loop;
  napi_value res, name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_async_init(loop, &W.async, deliver) != 0) return -1;
  uv_unref((uv_handle_t *)&W.async);
  W.env = env;
  if (napi_create_object(env, &res) != napi_ok || napi_create_reference(env, res, 1, &W.resource) != napi_ok ||
      napi_create_string_utf8(env, "sheep.writeBatch", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, res, name, &W.actx) != napi_ok) return -1;
  for (int i = 0; i < WRITERS; i++)
    if (pthread_create(&W.th[i], NULL, writer_main, NULL) != 0) return -1;
  napi_add_env_cleanup_hook(env, writers_stop, NULL);
  W.running = 1;
  return 0;
}

static napi_value write_batch(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  const char *usage = "writeBatch(fds: Int32Array, bufs: (Buffer | { pipe: number, length: number })[], positions: Float64Array, status: Int32Array, callback: () => void)";
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
    napi_value e, v;
    void *d = NULL;
    size_t l = 0;
    bool isbuf = false;
    int32_t pipefd = -1;
    int64_t plen = -1;
    if (napi_get_element(env, argv[1], i, &e) != napi_ok || napi_is_buffer(env, e, &isbuf) != napi_ok ||
        (isbuf && napi_get_buffer_info(env, e, &d, &l) != napi_ok) ||
        (!isbuf && (napi_get_named_property(env, e, "pipe", &v) != napi_ok || napi_get_value_int32(env, v, &pipefd) != napi_ok ||
                    napi_get_named_property(env, e, "length", &v) != napi_ok || napi_get_value_int64(env, v, &plen) != napi_ok ||
                    pipefd < 0 || plen < 0)) ||
        pos[i] < 0) {
      free(b);
      return throw_type(env, usage);
    }
    b->p[i].fd = fds[i];
    b->p[i].pipe = isbuf ? -1 : pipefd;
    b->p[i].data = d;
    b->p[i].len = isbuf ? l : (size_t)plen;
    b->p[i].pos = (int64_t)pos[i];
  }
  if (W.running && W.env != env) {
    // the writer threads deliver to the one environment (thread) that started them
    free(b);
    napi_throw_error(env, NULL, "writeBatch: in use by another thread of this process");
    return NULL;
  }
  if ((!W.running && writers_start(env) != 0) ||
      napi_create_reference(env, argv[0], 1, &b->fds_ref) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &b->bufs_ref) != napi_ok ||
      napi_create_reference(env, argv[3], 1, &b->status_ref) != napi_ok ||
      napi_create_reference(env, argv[4], 1, &b->cb_ref) != napi_ok) {
    napi_throw_error(env, NULL, "cannot queue the write batch");
    return NULL; // references leak with b on this path, which does not happen short of resource exhaustion
  }
  // pending work keeps the loop alive, as a pool request would
  if (W.pending++ == 0) uv_ref((uv_handle_t *)&W.async);
  pthread_mutex_lock(&W.mu);
  if (W.todo_tail) W.todo_tail->next = b;
  else W.todo = b;
  W.todo_tail = b;
  pthread_mutex_unlock(&W.mu);
  pthread_cond_signal(&W.more);
  return NULL;
}

// ---- pipes and the socket splicer ---------------------------------------

static napi_value pipe_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out, v;
  int64_t size;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int64(env, argv[0], &size) != napi_ok || size <= 0)
    return throw_type(env, "pipeOpen(size: number)");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    napi_throw_error(env, NULL, strerror(errno));
    return NULL;
  }
  fcntl(fds[1], F_SETPIPE_SZ, (int)(size > 0x40000000 ? 0x40000000 : size)); // may be refused: capacity says what we got
  int cap = fcntl(fds[1], F_GETPIPE_SZ);
  napi_create_array_with_length(env, 3, &out);
  napi_create_int32(env, fds[0], &v);
  napi_set_element(env, out, 0, v);
  napi_create_int32(env, fds[1], &v);
  napi_set_element(env, out, 1, v);
  napi_create_int32(env, cap < 0 ? 0 : cap, &v);
  napi_set_element(env, out, 2, v);
  return out;
}

struct splicer {
  uv_poll_t poll;
  int sock;       // our duplicate of the socket (epoll needs a descriptor of its own)
  int pipe;
  size_t len;
  size_t left;
  int active;     // a start is waiting for data
  int closed;     // released: the poll handle is closing or closed
  int uv_done;    // libuv is done with the poll handle
  int finalized;  // the JS external is gone
  napi_env env;
  napi_ref cb;
};

// Move what the socket has now: 1 all moved, 0 the rest is not here yet, 2 the pipe is full, <0 -errno.
static int splice_some(struct splicer *sp) {
  while (sp->left > 0) {
    ssize_t n = splice(sp->sock, NULL, sp->pipe, NULL, sp->left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      sp->left -= (size_t)n;
      continue;
    }
    if (n == 0) return -ECONNRESET;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      // nothing to read, or no room in the pipe: only the second leaves bytes in the socket
      int avail = 0;
      return ioctl(sp->sock, FIONREAD, &avail) == 0 && avail > 0 ? 2 : 0;
    }
    return -errno;
  }
  return 1;
}

static void splicer_finish(struct splicer *sp, int status) {
  napi_env env = sp->env;
  napi_value cb, global, arg;
  napi_handle_scope hs;
  sp->active = 0;
  uv_poll_stop(&sp->poll);
  napi_ref ref = sp->cb;
  sp->cb = NULL;
  if (!ref) return;
  napi_open_handle_scope(env, &hs);
  if (napi_get_reference_value(env, ref, &cb) == napi_ok && napi_get_global(env, &global) == napi_ok) {
    napi_create_int32(env, status, &arg);
    // a callback scope of its own, so that the promises it settles run now
    napi_make_callback(env, NULL, global, cb, 1, &arg, NULL);
  }
  napi_delete_reference(env, ref);
  napi_close_handle_scope(env, hs);
}

static void splicer_ready(uv_poll_t *h, int status, int events) {
  struct splicer *sp = h->data;
  if (!sp->active) return;
  int r = status < 0 ? status : splice_some(sp);
  if (r != 0) splicer_finish(sp, r == 1 ? 0 : r);
}

// Freed when both libuv and the JS side are done with it.
static void splicer_freed(uv_handle_t *h) {
  struct splicer *sp = h->data;
  sp->uv_done = 1;
  if (sp->finalized) free(sp);
}

static void splicer_release(struct splicer *sp) {
  if (sp->closed) return;
  sp->closed = 1;
  if (sp->active) splicer_finish(sp, -ECANCELED);
  close(sp->sock);
  uv_close((uv_handle_t *)&sp->poll, splicer_freed);
}

static void splicer_gc(napi_env env, void *data, void *hint) {
  struct splicer *sp = data;
  sp->finalized = 1;
  if (!sp->closed) {
    // collected without splicerClose: nobody can be waiting (a pending start holds its callback, not this)
    if (sp->cb) napi_delete_reference(env, sp->cb);
    sp->cb = NULL;
    sp->active = 0;
    splicer_release(sp);
  } else if (sp->uv_done) {
    free(sp);
  }
}

static struct splicer *get_splicer(napi_env env, napi_value v) {
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &p) != napi_ok || !p) return NULL;
  return ((struct splicer *)p)->closed ? NULL : p;
}

static napi_value splicer_open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  int32_t fd;
  uv_loop_t *loop;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0)
    return throw_type(env, "splicerOpen(socketFd: number)");
  struct splicer *sp = calloc(1, sizeof(*sp));
  if (!sp) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  sp->env = env;
  sp->sock = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (sp->sock < 0 || napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &sp->poll, sp->sock) != 0) {
    int e = errno;
    if (sp->sock >= 0) close(sp->sock);
    free(sp);
    napi_throw_error(env, NULL, strerror(e));
    return NULL;
  }
  sp->poll.data = sp;
  if (napi_create_external(env, sp, splicer_gc, NULL, &out) != napi_ok) {
    sp->finalized = 1; // no external: libuv's close callback frees it
    splicer_release(sp);
    napi_throw_error(env, NULL, "cannot create the splicer");
    return NULL;
  }
  return out;
}

static napi_value splicer_start(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], ret;
  int32_t pipefd;
  int64_t len;
  napi_valuetype cbt;
  const char *usage = "splicerStart(splicer, pipeWriteFd: number, length: number, callback: (status: number) => void)";
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_value_int32(env, argv[1], &pipefd) != napi_ok || napi_get_value_int64(env, argv[2], &len) != napi_ok ||
      napi_typeof(env, argv[3], &cbt) != napi_ok || cbt != napi_function || pipefd < 0 || len <= 0)
    return throw_type(env, usage);
  struct splicer *sp = get_splicer(env, argv[0]);
  if (!sp) return throw_type(env, usage);
  if (sp->active) {
    napi_throw_error(env, NULL, "splicerStart: the splicer is busy");
    return NULL;
  }
  sp->pipe = pipefd;
  sp->len = sp->left = (size_t)len;
  int r = splice_some(sp);
  if (r == 0) {
    if (napi_create_reference(env, argv[3], 1, &sp->cb) != napi_ok ||
        uv_poll_start(&sp->poll, UV_READABLE | UV_DISCONNECT, splicer_ready) != 0) {
      napi_throw_error(env, NULL, "splicerStart: cannot wait for the socket");
      return NULL;
    }
    sp->active = 1;
  }
  napi_create_int32(env, r, &ret);
  return ret;
}

static napi_value splicer_moved(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], ret;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return throw_type(env, "splicerMoved(splicer)");
  struct splicer *sp = get_splicer(env, argv[0]);
  if (!sp) return throw_type(env, "splicerMoved(splicer)");
  napi_create_double(env, (double)(sp->len - sp->left), &ret);
  return ret;
}

static napi_value splicer_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return throw_type(env, "splicerClose(splicer)");
  struct splicer *sp = get_splicer(env, argv[0]);
  if (sp) splicer_release(sp);
  return NULL;
}

static napi_value set_write_chunk(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int64(env, argv[0], &n) != napi_ok || n < 0 || (n > 0 && n < 4096))
    return throw_type(env, "setWriteChunk(bytes: 0, or at least 4096)");
  write_chunk = n;
  return NULL;
}

void hugebuf_register(napi_env env, napi_value exports); // hugebuf.c
void xattr_register(napi_env env, napi_value exports); // xattr.c

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
    { "readNow", NULL, read_now, NULL, NULL, NULL, napi_default, NULL },
    { "writeBatch", NULL, write_batch, NULL, NULL, NULL, napi_default, NULL },
    { "setWriteChunk", NULL, set_write_chunk, NULL, NULL, NULL, napi_default, NULL },
    { "pipeOpen", NULL, pipe_open, NULL, NULL, NULL, napi_default, NULL },
    { "splicerOpen", NULL, splicer_open, NULL, NULL, NULL, napi_default, NULL },
    { "splicerStart", NULL, splicer_start, NULL, NULL, NULL, napi_default, NULL },
    { "splicerMoved", NULL, splicer_moved, NULL, NULL, NULL, napi_default, NULL },
    { "splicerClose", NULL, splicer_close, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  hugebuf_register(env, exports);
  xattr_register(env, exports);
  return exports;
}
