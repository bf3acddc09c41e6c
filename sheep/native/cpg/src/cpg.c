/*
 * A thin Node-API binding of corosync's CPG (closed process group) library.
 *
 *   const h = new Cpg(onEvents)   // onEvents(events, dispatchError)
 *   h.initialize() -> cs_error_t  // connects; watches the CPG fd with uv_poll
 *   h.join(name) / h.leave(name) / h.mcast(buffer) -> cs_error_t
 *   h.localNodeId() -> [cs_error_t, nodeid]
 *   h.membership(name) -> [cs_error_t, [{nodeid, pid}]]
 *   h.finalize() -> cs_error_t
 *
 * Every call returns corosync's status code instead of throwing, so the
 * caller can retry CS_ERR_TRY_AGAIN (6) with a backoff on the JS side
 * rather than spinning here with the event loop blocked.
 *
 * cpg_dispatch runs its callbacks on a deep C stack inside libqb; calling
 * into JavaScript from there is fragile. The callbacks only copy each
 * deliver / confchg into a queue; once cpg_dispatch has returned, the
 * queue is handed to JavaScript in one call (in delivery order).
 */
#include <node_api.h>
#include <uv.h>
#include <corosync/cpg.h>
#include <corosync/corotypes.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#define NAPI_OK(call)                                                          \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      napi_throw_error(env, NULL, "cpg binding: " #call " failed");            \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

enum ev_type { EV_DELIVER, EV_CONFCHG };

struct addr_list {
  size_t n;
  struct cpg_address *a;
};

struct event {
  enum ev_type type;
  struct event *next;
  /* deliver */
  uint32_t nodeid, pid;
  void *data;
  size_t len;
  /* confchg */
  struct addr_list members, left, joined;
};

struct cpg {
  napi_env env;
  napi_ref self;      /* weak while idle, strong while polling */
  napi_ref callback;
  napi_async_context actx;
  cpg_handle_t handle;
  int initialized;
  int polling;        /* uv_poll started and not yet closed */
  int closing;
  int wrapper_gone;   /* the JS object was collected */
  uv_poll_t poll;
  struct event *head, *tail;
};

static void enqueue(struct cpg *c, struct event *e) {
  e->next = NULL;
  if (c->tail) c->tail->next = e; else c->head = e;
  c->tail = e;
}

static void free_event(struct event *e) {
  free(e->data);
  free(e->members.a);
  free(e->left.a);
  free(e->joined.a);
  free(e);
}

static void drop_queue(struct cpg *c) {
  struct event *e = c->head;
  while (e) { struct event *n = e->next; free_event(e); e = n; }
  c->head = c->tail = NULL;
}

static struct cpg *ctx_of(cpg_handle_t h) {
  void *p = NULL;
  if (cpg_context_get(h, &p) != CS_OK) return NULL;
  return (struct cpg *)p;
}

static void on_deliver(cpg_handle_t h, const struct cpg_name *group, uint32_t nodeid, uint32_t pid,
                       void *msg, size_t len) {
  (void)group;
  struct cpg *c = ctx_of(h);
  if (!c) return;
  struct event *e = calloc(1, sizeof *e);
  if (!e) abort();
  e->type = EV_DELIVER;
  e->nodeid = nodeid;
  e->pid = pid;
  e->len = len;
  e->data = malloc(len ? len : 1);
  if (!e->data) abort();
  memcpy(e->data, msg, len);
  enqueue(c, e);
}

static void copy_list(struct addr_list *dst, const struct cpg_address *src, size_t n) {
  dst->n = n;
  dst->a = malloc((n ? n : 1) * sizeof *src);
  if (!dst->a) abort();
  if (n) memcpy(dst->a, src, n * sizeof *src);
}

static void on_confchg(cpg_handle_t h, const struct cpg_name *group,
                       const struct cpg_address *members, size_t nmembers,
                       const struct cpg_address *left, size_t nleft,
                       const struct cpg_address *joined, size_t njoined) {
  (void)group;
  struct cpg *c = ctx_of(h);
  if (!c) return;
  struct event *e = calloc(1, sizeof *e);
  if (!e) abort();
  e->type = EV_CONFCHG;
  copy_list(&e->members, members, nmembers);
  copy_list(&e->left, left, nleft);
  copy_list(&e->joined, joined, njoined);
  enqueue(c, e);
}

static napi_value make_u32(napi_env env, uint32_t v) {
  napi_value r;
  napi_create_uint32(env, v, &r);
  return r;
}

static napi_value addr_array(napi_env env, const struct addr_list *l) {
  napi_value arr;
  napi_create_array_with_length(env, l->n, &arr);
  for (size_t i = 0; i < l->n; i++) {
    napi_value o;
    napi_create_object(env, &o);
    napi_set_named_property(env, o, "nodeid", make_u32(env, l->a[i].nodeid));
    napi_set_named_property(env, o, "pid", make_u32(env, l->a[i].pid));
    napi_set_named_property(env, o, "reason", make_u32(env, l->a[i].reason));
    napi_set_element(env, arr, (uint32_t)i, o);
  }
  return arr;
}

static napi_value event_to_js(napi_env env, struct event *e) {
  napi_value o, s;
  napi_create_object(env, &o);
  if (e->type == EV_DELIVER) {
    napi_create_string_utf8(env, "deliver", NAPI_AUTO_LENGTH, &s);
    napi_set_named_property(env, o, "type", s);
    napi_set_named_property(env, o, "nodeid", make_u32(env, e->nodeid));
    napi_set_named_property(env, o, "pid", make_u32(env, e->pid));
    napi_value buf;
    napi_create_buffer_copy(env, e->len, e->data, NULL, &buf);
    napi_set_named_property(env, o, "data", buf);
  } else {
    napi_create_string_utf8(env, "confchg", NAPI_AUTO_LENGTH, &s);
    napi_set_named_property(env, o, "type", s);
    napi_set_named_property(env, o, "members", addr_array(env, &e->members));
    napi_set_named_property(env, o, "left", addr_array(env, &e->left));
    napi_set_named_property(env, o, "joined", addr_array(env, &e->joined));
  }
  return o;
}

static void maybe_free(struct cpg *c) {
  if (c->wrapper_gone && !c->polling) {
    drop_queue(c);
    free(c);
  }
}

static void on_poll_closed(uv_handle_t *h) {
  struct cpg *c = (struct cpg *)h->data;
  c->polling = 0;
  c->closing = 0;
  maybe_free(c);
}

static void stop_poll(struct cpg *c) {
  if (c->polling && !c->closing) {
    c->closing = 1;
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, on_poll_closed);
    if (!c->wrapper_gone) {
      uint32_t rc;
      napi_reference_unref(c->env, c->self, &rc);
    }
  }
}

/* Hand the queued events (and a dispatch error, if any) to JavaScript. */
static void flush_to_js(struct cpg *c, cs_error_t err) {
  napi_env env = c->env;
  if (!c->head && err == CS_OK) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value self, cb, arr, args[2], result;
  size_t n = 0;
  for (struct event *e = c->head; e; e = e->next) n++;
  napi_create_array_with_length(env, n, &arr);
  uint32_t i = 0;
  struct event *e = c->head;
  c->head = c->tail = NULL;
  while (e) {
    struct event *next = e->next;
    napi_set_element(env, arr, i++, event_to_js(env, e));
    free_event(e);
    e = next;
  }
  args[0] = arr;
  if (err == CS_OK) napi_get_null(env, &args[1]);
  else args[1] = make_u32(env, (uint32_t)err);
  if (napi_get_reference_value(env, c->self, &self) == napi_ok && self &&
      napi_get_reference_value(env, c->callback, &cb) == napi_ok && cb) {
    napi_status st = napi_make_callback(env, c->actx, self, cb, 2, args, &result);
    if (st == napi_pending_exception) {
      napi_value ex;
      napi_get_and_clear_last_exception(env, &ex);
      napi_fatal_exception(env, ex);
    }
  }
  napi_close_handle_scope(env, scope);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  (void)events;
  struct cpg *c = (struct cpg *)p->data;
  if (c->closing || !c->initialized) return;
  cs_error_t err = CS_OK;
  if (status < 0) {
    err = CS_ERR_LIBRARY;
  } else {
    err = cpg_dispatch(c->handle, CS_DISPATCH_ALL);
    if (err == CS_ERR_TRY_AGAIN) err = CS_OK; /* nothing ready yet: wait for the fd again */
  }
  if (err != CS_OK) stop_poll(c);
  /* cpg_dispatch has returned: now it is safe to run JavaScript. */
  flush_to_js(c, err);
}

static struct cpg *unwrap(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value thisv;
  void *p = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &thisv, NULL) != napi_ok) return NULL;
  if (napi_unwrap(env, thisv, &p) != napi_ok) return NULL;
  return (struct cpg *)p;
}

static void finalize_wrapper(napi_env env, void *data, void *hint) {
  (void)hint;
  struct cpg *c = (struct cpg *)data;
  if (c->initialized) {
    cpg_finalize(c->handle);
    c->initialized = 0;
  }
  napi_delete_reference(env, c->callback);
  napi_delete_reference(env, c->self);
  napi_async_destroy(env, c->actx);
  c->wrapper_gone = 1;
  if (c->polling && !c->closing) {
    c->closing = 1;
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, on_poll_closed);
  }
  maybe_free(c);
}

static napi_value js_new(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], thisv, name;
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, &thisv, NULL));
  napi_valuetype t;
  if (argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, NULL, "Cpg(callback): callback must be a function");
    return NULL;
  }
  struct cpg *c = calloc(1, sizeof *c);
  if (!c) { napi_throw_error(env, NULL, "out of memory"); return NULL; }
  c->env = env;
  NAPI_OK(napi_create_reference(env, argv[0], 1, &c->callback));
  NAPI_OK(napi_create_string_utf8(env, "corosync-cpg", NAPI_AUTO_LENGTH, &name));
  NAPI_OK(napi_async_init(env, thisv, name, &c->actx));
  NAPI_OK(napi_wrap(env, thisv, c, finalize_wrapper, NULL, &c->self));
  return thisv;
}

static napi_value js_initialize(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  struct cpg *c = unwrap(env, info, &argc, NULL);
  if (!c) return NULL;
  if (c->initialized) return make_u32(env, CS_OK);
  cpg_model_v1_data_t model;
  memset(&model, 0, sizeof model);
  model.model = CPG_MODEL_V1;
  model.cpg_deliver_fn = on_deliver;
  model.cpg_confchg_fn = on_confchg;
  cs_error_t err = cpg_model_initialize(&c->handle, CPG_MODEL_V1, (cpg_model_data_t *)&model, NULL);
  if (err != CS_OK) return make_u32(env, err);
  cpg_context_set(c->handle, c);
  int fd = -1;
  err = cpg_fd_get(c->handle, &fd);
  if (err != CS_OK) {
    cpg_finalize(c->handle);
    return make_u32(env, err);
  }
  uv_loop_t *loop;
  NAPI_OK(napi_get_uv_event_loop(env, &loop));
  if (uv_poll_init(loop, &c->poll, fd) != 0) {
    cpg_finalize(c->handle);
    return make_u32(env, CS_ERR_LIBRARY);
  }
  c->poll.data = c;
  c->initialized = 1;
  c->polling = 1;
  uint32_t rc;
  napi_reference_ref(env, c->self, &rc); /* stay alive while the fd is watched */
  uv_poll_start(&c->poll, UV_READABLE | UV_DISCONNECT, on_poll);
  return make_u32(env, CS_OK);
}

static int get_name(napi_env env, napi_value v, struct cpg_name *n) {
  size_t len = 0;
  memset(n, 0, sizeof *n);
  if (napi_get_value_string_utf8(env, v, n->value, sizeof n->value, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "group name must be a string");
    return -1;
  }
  if (len >= CPG_MAX_NAME_LENGTH - 1) {
    napi_throw_range_error(env, NULL, "group name too long");
    return -1;
  }
  n->length = (uint32_t)len;
  return 0;
}

/* join(name) and leave(name): the same call shape around a different cpg function */
static napi_value name_call(napi_env env, napi_callback_info info,
                            cs_error_t (*fn)(cpg_handle_t, const struct cpg_name *)) {
  size_t argc = 1;
  napi_value argv[1];
  struct cpg *c = unwrap(env, info, &argc, argv);
  if (!c) return NULL;
  if (!c->initialized) return make_u32(env, CS_ERR_BAD_HANDLE);
  struct cpg_name n;
  if (argc < 1 || get_name(env, argv[0], &n)) return NULL;
  return make_u32(env, fn(c->handle, &n));
}

static napi_value js_join(napi_env env, napi_callback_info info) { return name_call(env, info, cpg_join); }

static napi_value js_leave(napi_env env, napi_callback_info info) { return name_call(env, info, cpg_leave); }

static napi_value js_mcast(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct cpg *c = unwrap(env, info, &argc, argv);
  if (!c) return NULL;
  if (!c->initialized) return make_u32(env, CS_ERR_BAD_HANDLE);
  bool isbuf = false;
  if (argc < 1 || napi_is_buffer(env, argv[0], &isbuf) != napi_ok || !isbuf) {
    napi_throw_type_error(env, NULL, "mcast(buffer): argument must be a Buffer");
    return NULL;
  }
  void *data;
  size_t len;
  NAPI_OK(napi_get_buffer_info(env, argv[0], &data, &len));
  struct iovec iov = { .iov_base = data, .iov_len = len };
  return make_u32(env, cpg_mcast_joined(c->handle, CPG_TYPE_AGREED, &iov, 1));
}

static napi_value pair(napi_env env, cs_error_t err, napi_value v) {
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, make_u32(env, err));
  if (!v) napi_get_null(env, &v);
  napi_set_element(env, arr, 1, v);
  return arr;
}

static napi_value js_local_nodeid(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  struct cpg *c = unwrap(env, info, &argc, NULL);
  if (!c) return NULL;
  if (!c->initialized) return pair(env, CS_ERR_BAD_HANDLE, NULL);
  unsigned int id = 0;
  cs_error_t err = cpg_local_get(c->handle, &id);
  return pair(env, err, err == CS_OK ? make_u32(env, id) : NULL);
}

static napi_value js_membership(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct cpg *c = unwrap(env, info, &argc, argv);
  if (!c) return NULL;
  if (!c->initialized) return pair(env, CS_ERR_BAD_HANDLE, NULL);
  struct cpg_name n;
  if (argc < 1 || get_name(env, argv[0], &n)) return NULL;
  struct cpg_address list[CPG_MEMBERS_MAX];
  int count = CPG_MEMBERS_MAX;
  cs_error_t err = cpg_membership_get(c->handle, &n, list, &count);
  if (err != CS_OK) return pair(env, err, NULL);
  struct addr_list l = { .n = (size_t)count, .a = list };
  return pair(env, err, addr_array(env, &l));
}

static napi_value js_finalize(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  struct cpg *c = unwrap(env, info, &argc, NULL);
  if (!c) return NULL;
  if (!c->initialized) return make_u32(env, CS_OK);
  stop_poll(c);
  cs_error_t err = cpg_finalize(c->handle);
  c->initialized = 0;
  drop_queue(c);
  return make_u32(env, err);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
    { "initialize", NULL, js_initialize, NULL, NULL, NULL, napi_default, NULL },
    { "join", NULL, js_join, NULL, NULL, NULL, napi_default, NULL },
    { "leave", NULL, js_leave, NULL, NULL, NULL, napi_default, NULL },
    { "mcast", NULL, js_mcast, NULL, NULL, NULL, napi_default, NULL },
    { "localNodeId", NULL, js_local_nodeid, NULL, NULL, NULL, napi_default, NULL },
    { "membership", NULL, js_membership, NULL, NULL, NULL, napi_default, NULL },
    { "finalize", NULL, js_finalize, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_value cls;
  NAPI_OK(napi_define_class(env, "Cpg", NAPI_AUTO_LENGTH, js_new, NULL,
                            sizeof methods / sizeof methods[0], methods, &cls));
  NAPI_OK(napi_set_named_property(env, exports, "Cpg", cls));
  napi_value codes;
  NAPI_OK(napi_create_object(env, &codes));
  napi_set_named_property(env, codes, "OK", make_u32(env, CS_OK));
  napi_set_named_property(env, codes, "ERR_LIBRARY", make_u32(env, CS_ERR_LIBRARY));
  napi_set_named_property(env, codes, "ERR_TRY_AGAIN", make_u32(env, CS_ERR_TRY_AGAIN));
  napi_set_named_property(env, codes, "ERR_BAD_HANDLE", make_u32(env, CS_ERR_BAD_HANDLE));
  napi_set_named_property(env, codes, "ERR_ACCESS", make_u32(env, CS_ERR_ACCESS));
  napi_set_named_property(env, codes, "ERR_NOT_EXIST", make_u32(env, CS_ERR_NOT_EXIST));
  napi_set_named_property(env, codes, "ERR_EXIST", make_u32(env, CS_ERR_EXIST));
  napi_set_named_property(env, codes, "ERR_TOO_BIG", make_u32(env, CS_ERR_TOO_BIG));
  napi_set_named_property(env, codes, "ERR_SECURITY", make_u32(env, CS_ERR_SECURITY));
  NAPI_OK(napi_set_named_property(env, exports, "codes", codes));
  napi_value reasons;
  NAPI_OK(napi_create_object(env, &reasons));
  napi_set_named_property(env, reasons, "JOIN", make_u32(env, CPG_REASON_JOIN));
  napi_set_named_property(env, reasons, "LEAVE", make_u32(env, CPG_REASON_LEAVE));
  napi_set_named_property(env, reasons, "NODEDOWN", make_u32(env, CPG_REASON_NODEDOWN));
  napi_set_named_property(env, reasons, "NODEUP", make_u32(env, CPG_REASON_NODEUP));
  napi_set_named_property(env, reasons, "PROCDOWN", make_u32(env, CPG_REASON_PROCDOWN));
  NAPI_OK(napi_set_named_property(env, exports, "reasons", reasons));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
