/* The system calls node_zygote.js needs to fork sandbox runs from one started node (sandbox_server/node_zygote.py
 * says why and how it is built). A Node-API addon in plain C with its own declarations of the few Node-API, libuv
 * and node functions it calls, so it builds with gcc alone (no node headers, no node-gyp): Node-API is a stable C
 * ABI, and node exports the libuv and node symbols to addons.
 *
 * Every function throws a JavaScript Error naming the call and errno when the call fails.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct napi_env__ *napi_env;
typedef struct napi_value__ *napi_value;
typedef struct napi_callback_info__ *napi_callback_info;
typedef int napi_status;
typedef napi_value (*napi_callback)(napi_env, napi_callback_info);
enum { napi_undefined_t, napi_null_t, napi_boolean_t, napi_number_t, napi_string_t };
extern napi_status napi_get_cb_info(napi_env, napi_callback_info, size_t *, napi_value *, napi_value *, void **);
extern napi_status napi_create_int32(napi_env, int32_t, napi_value *);
extern napi_status napi_create_double(napi_env, double, napi_value *);
extern napi_status napi_get_value_int32(napi_env, napi_value, int32_t *);
extern napi_status napi_get_value_double(napi_env, napi_value, double *);
extern napi_status napi_get_value_string_utf8(napi_env, napi_value, char *, size_t, size_t *);
extern napi_status napi_typeof(napi_env, napi_value, int *);
extern napi_status napi_create_function(napi_env, const char *, size_t, napi_callback, void *, napi_value *);
extern napi_status napi_set_named_property(napi_env, napi_value, const char *, napi_value);
extern napi_status napi_get_buffer_info(napi_env, napi_value, void **, size_t *);
extern napi_status napi_create_buffer_copy(napi_env, size_t, const void *, void **, napi_value *);
extern napi_status napi_create_array_with_length(napi_env, size_t, napi_value *);
extern napi_status napi_set_element(napi_env, napi_value, uint32_t, napi_value);
extern napi_status napi_get_null(napi_env, napi_value *);
extern napi_status napi_get_undefined(napi_env, napi_value *);
extern napi_status napi_throw_error(napi_env, const char *, const char *);
extern napi_status napi_add_env_cleanup_hook(napi_env, void (*)(void *), void *);
extern void *uv_default_loop(void);
extern int uv_loop_fork(void *);
/* node's C++ API, by its exported (Itanium-mangled) names: a Local<Context> is one pointer, passed as one. */
extern void *v8_isolate_get_current(void) __asm__("_ZN2v87Isolate10GetCurrentEv");
extern void *v8_isolate_get_current_context(void *isolate) __asm__("_ZN2v87Isolate17GetCurrentContextEv");
extern void *node_get_current_environment(void *context) __asm__("_ZN4node21GetCurrentEnvironmentEN2v85LocalINS0_7ContextEEE");
extern void node_at_exit(void *env, void (*cb)(void *), void *arg) __asm__("_ZN4node6AtExitEPNS_11EnvironmentEPFvPvES2_");

#define MAX_ARGS 6
#define ARGS(n)                                                   \
  size_t argc = MAX_ARGS;                                         \
  napi_value argv[MAX_ARGS];                                      \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);           \
  if (argc < (n)) { napi_throw_error(env, NULL, "too few arguments"); return NULL; }

static napi_value fail(napi_env env, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(errno));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static napi_value num(napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}

static int32_t i32(napi_env env, napi_value v) {
  int32_t out = 0;
  napi_get_value_int32(env, v, &out);
  return out;
}

/* A string argument into buf; null/undefined -> NULL (mount's optional arguments). */
static const char *str(napi_env env, napi_value v, char *buf, size_t size) {
  int type;
  napi_typeof(env, v, &type);
  if (type == napi_null_t || type == napi_undefined_t) return NULL;
  size_t len;
  napi_get_value_string_utf8(env, v, buf, size, &len);
  return buf;
}

/* V8 maps its heap with MADV_DONTFORK (a build option of node's V8, for faster forks of processes that exec):
 * a child would lose it. Undone on every mapping right before each fork (mappings made since the last fork too). */
static void allow_fork_all(void) {
  FILE *f = fopen("/proc/self/maps", "re");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2) madvise((void *)lo, hi - lo, MADV_DOFORK);
    if (!strchr(line, '\n')) {  /* a long line: skip its rest */
      int c;
      while ((c = fgetc(f)) != EOF && c != '\n') {}
    }
  }
  fclose(f);
}

static napi_value js_fork(napi_env env, napi_callback_info info) {
  allow_fork_all();
  pid_t pid = fork();
  if (pid < 0) return fail(env, "fork");
  return num(env, pid);
}

/* In a forked child: a new epoll instance, async wake-up fd and signal pipe for node's event loop (the parent's
 * are shared across fork otherwise). Called once, in the process that runs the program. */
static napi_value js_loop_fork(napi_env env, napi_callback_info info) {
  int rc = uv_loop_fork(uv_default_loop());
  if (rc != 0) {
    errno = -rc;
    return fail(env, "uv_loop_fork");
  }
  return NULL;
}

/* How the program's node ends. node's own teardown joins the platform's worker threads, which exist only in the
 * zygote, so a forked node would hang or crash there: every way out ends in _exit with the status node would
 * have used. The program's exit code is kept here by node_zygote.js ('exit' event, process.exit). */
static int exit_code = 0;
static void exit_now(void *arg) {
  (void)arg;
  _exit(exit_code);
}

static napi_value js_set_exit_code(napi_env env, napi_callback_info info) {
  ARGS(1);
  exit_code = i32(env, argv[0]) & 0xff;
  return NULL;
}

static napi_value js_exit(napi_env env, napi_callback_info info) {
  ARGS(1);
  _exit(i32(env, argv[0]) & 0xff);
  return NULL;
}

/* Natural end (event loop empty): env cleanup hooks run before the platform teardown. A fatal exception: node
 * prints it, runs the AtExit callbacks, then tears down: the AtExit callback ends it first. */
static napi_value js_install_exit_hooks(napi_env env, napi_callback_info info) {
  napi_add_env_cleanup_hook(env, exit_now, NULL);
  void *isolate = v8_isolate_get_current();
  void *context = isolate ? v8_isolate_get_current_context(isolate) : NULL;
  void *node_env = context ? node_get_current_environment(context) : NULL;
  if (!node_env) {
    napi_throw_error(env, NULL, "no node Environment for the current context");
    return NULL;
  }
  node_at_exit(node_env, exit_now, NULL);
  return NULL;
}

/* The platform's worker threads exist only in the zygote: in a fork, a task posted to them would never run, and
 * node waits for every posted task whenever its event loop empties (NodePlatform::DrainTasks), so the run would
 * hang. In the forked program, the platform's vtable is patched (in this process only: the page is copied on
 * write) so that it reports no worker threads, which makes V8's jobs run on the thread that joins them, and so that
 * a task posted to a worker anyway runs at once on the calling thread. The zygote starts node with
 * --single-threaded, so V8 posts no background work of its own (concurrent marking, sweeping, compilation). */
typedef struct v8_task { void **vtable; } v8_task;  /* v8::Task: [0] ~Task, [1] deleting ~Task, [2] Run */

static void run_task(v8_task **owner) {  /* a std::unique_ptr<Task> passed by value: a pointer to its storage */
  v8_task *task = *owner;
  *owner = NULL;
  if (task) {
    ((void (*)(v8_task *))task->vtable[2])(task);
    ((void (*)(v8_task *))task->vtable[1])(task);
  }
}
static int no_workers(void *self) { (void)self; return 0; }
static void call_now(void *self, v8_task **task) { (void)self; run_task(task); }
static void call_delayed_now(void *self, v8_task **task, double delay) { (void)self; (void)delay; run_task(task); }

static napi_value js_detach_workers(napi_env env, napi_callback_info info) {
  void **vtable = dlsym(RTLD_DEFAULT, "_ZTVN4node12NodePlatformE");
  void *targets[3] = {dlsym(RTLD_DEFAULT, "_ZN4node12NodePlatform21NumberOfWorkerThreadsEv"),
                      dlsym(RTLD_DEFAULT, "_ZN4node12NodePlatform18CallOnWorkerThreadESt10unique_ptrIN2v84TaskESt14default_deleteIS3_EE"),
                      dlsym(RTLD_DEFAULT, "_ZN4node12NodePlatform25CallDelayedOnWorkerThreadESt10unique_ptrIN2v84TaskESt14default_deleteIS3_EEd")};
  void *replacements[3] = {(void *)no_workers, (void *)call_now, (void *)call_delayed_now};
  if (!vtable || !targets[0] || !targets[1] || !targets[2]) {
    napi_throw_error(env, NULL, "node's NodePlatform symbols are not exported by this node");
    return NULL;
  }
  void **slots = vtable + 2;  /* after offset-to-top and typeinfo */
  const int nslots = 64;
  long page = sysconf(_SC_PAGESIZE);
  uintptr_t lo = (uintptr_t)slots & ~(uintptr_t)(page - 1);
  uintptr_t hi = ((uintptr_t)(slots + nslots) + page - 1) & ~(uintptr_t)(page - 1);
  if (mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE) != 0) return fail(env, "mprotect");
  int found = 0;
  for (int i = 0; i < nslots; i++) {
    for (int k = 0; k < 3; k++) {
      if (slots[i] == targets[k]) {
        slots[i] = replacements[k];
        found |= 1 << k;
      }
    }
  }
  mprotect((void *)lo, hi - lo, PROT_READ);
  if (found != 7) {
    napi_throw_error(env, NULL, "NodePlatform's vtable does not hold the expected worker-thread methods");
    return NULL;
  }
  return NULL;
}

static napi_value js_unshare(napi_env env, napi_callback_info info) {
  ARGS(1);
  if (unshare(i32(env, argv[0])) != 0) return fail(env, "unshare");
  return NULL;
}

static napi_value js_mount(napi_env env, napi_callback_info info) {
  ARGS(5);
  char src[4096], target[4096], fstype[64], data[4096];
  double flags;
  napi_get_value_double(env, argv[3], &flags);
  const char *t = str(env, argv[1], target, sizeof target);
  if (mount(str(env, argv[0], src, sizeof src), t, str(env, argv[2], fstype, sizeof fstype), (unsigned long)flags,
            str(env, argv[4], data, sizeof data)) != 0) {
    char what[200];
    snprintf(what, sizeof what, "mount %.150s", t ? t : "?");
    return fail(env, what);
  }
  return NULL;
}

static napi_value js_loopback_up(napi_env env, napi_callback_info info) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return fail(env, "socket");
  struct ifreq req;
  memset(&req, 0, sizeof req);
  strcpy(req.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &req) != 0) { close(s); return fail(env, "SIOCGIFFLAGS"); }
  req.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(s, SIOCSIFFLAGS, &req) != 0) { close(s); return fail(env, "SIOCSIFFLAGS"); }
  close(s);
  return NULL;
}

static napi_value js_prctl(napi_env env, napi_callback_info info) {
  ARGS(2);
  if (prctl(i32(env, argv[0]), (unsigned long)i32(env, argv[1]), 0, 0, 0) != 0) return fail(env, "prctl");
  return NULL;
}

/* Every capability gone (bounding set, ambient, effective/permitted/inheritable) and no_new_privs. */
static napi_value js_drop_privileges(napi_env env, napi_callback_info info) {
  for (int cap = 0; cap <= 63; cap++) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return fail(env, "PR_CAPBSET_DROP");
  }
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  struct { uint32_t version; int pid; } header = {0x20080522, 0};
  uint32_t data[6] = {0};
  if (syscall(SYS_capset, &header, data) != 0) return fail(env, "capset");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail(env, "PR_SET_NO_NEW_PRIVS");
  return NULL;
}

static napi_value js_setrlimit(napi_env env, napi_callback_info info) {
  ARGS(3);
  double soft, hard;
  napi_get_value_double(env, argv[1], &soft);
  napi_get_value_double(env, argv[2], &hard);
  struct rlimit rl = {(rlim_t)soft, (rlim_t)hard};
  if (setrlimit(i32(env, argv[0]), &rl) != 0) return fail(env, "setrlimit");
  return NULL;
}

static napi_value js_setsid(napi_env env, napi_callback_info info) {
  if (setsid() < 0) return fail(env, "setsid");
  return NULL;
}

static napi_value js_dup2(napi_env env, napi_callback_info info) {
  ARGS(2);
  if (dup2(i32(env, argv[0]), i32(env, argv[1])) < 0) return fail(env, "dup2");
  return NULL;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  close(i32(env, argv[0]));
  return NULL;
}

/* 0: default, 1: ignore. */
static napi_value js_signal(napi_env env, napi_callback_info info) {
  ARGS(2);
  signal(i32(env, argv[0]), i32(env, argv[1]) ? SIG_IGN : SIG_DFL);
  return NULL;
}

/* Blocks for a child (pid, or -1 for any): [pid, status as the run reports it: exit code, or 128 + signal]. */
static napi_value js_wait(napi_env env, napi_callback_info info) {
  ARGS(1);
  int status;
  pid_t pid;
  while ((pid = waitpid(i32(env, argv[0]), &status, 0)) < 0 && errno == EINTR) {}
  if (pid < 0) return fail(env, "waitpid");
  napi_value out;
  napi_create_array_with_length(env, 2, &out);
  napi_set_element(env, out, 0, num(env, pid));
  napi_set_element(env, out, 1, num(env, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)));
  return out;
}

/* One message of a SOCK_SEQPACKET socket and the fds it carries: [Buffer (empty at EOF), [fd, ...]]. */
static napi_value js_recvmsg(napi_env env, napi_callback_info info) {
  ARGS(1);
  static char data[1 << 16];
  char control[CMSG_SPACE(sizeof(int) * 16)];
  struct iovec iov = {data, sizeof data};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  while ((n = recvmsg(i32(env, argv[0]), &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {}
  if (n < 0) return fail(env, "recvmsg");
  napi_value out, buf, fds;
  napi_create_array_with_length(env, 2, &out);
  napi_create_buffer_copy(env, (size_t)n, data, NULL, &buf);
  napi_create_array_with_length(env, 0, &fds);
  uint32_t k = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int *got = (int *)CMSG_DATA(c);
      for (size_t i = 0; i < count; i++) {
        napi_set_element(env, fds, k++, num(env, got[i]));
      }
    }
  }
  napi_set_element(env, out, 0, buf);
  napi_set_element(env, out, 1, fds);
  return out;
}

/* send(fd, buffer[, passFd]): one message, with one fd attached when passFd >= 0. */
static napi_value js_sendmsg(napi_env env, napi_callback_info info) {
  ARGS(2);
  void *data;
  size_t len;
  napi_get_buffer_info(env, argv[1], &data, &len);
  int pass = argc > 2 ? i32(env, argv[2]) : -1;
  struct iovec iov = {data, len};
  struct msghdr msg = {0};
  char control[CMSG_SPACE(sizeof(int))];
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (pass >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &pass, sizeof(int));
  }
  while (sendmsg(i32(env, argv[0]), &msg, MSG_NOSIGNAL) < 0) {
    if (errno != EINTR) return fail(env, "sendmsg");
  }
  return NULL;
}

static napi_value js_memfd(napi_env env, napi_callback_info info) {
  int fd = (int)syscall(SYS_memfd_create, "fetched", 0);
  if (fd < 0) return fail(env, "memfd_create");
  return num(env, fd);
}

static napi_value js_getpid(napi_env env, napi_callback_info info) { return num(env, getpid()); }

#define EXPORT(name, fn)                                       \
  napi_create_function(env, name, sizeof(name) - 1, fn, NULL, &f); \
  napi_set_named_property(env, exports, name, f)

napi_value napi_register_module_v1(napi_env env, napi_value exports) {
  napi_value f;
  EXPORT("fork", js_fork);
  EXPORT("loopFork", js_loop_fork);
  EXPORT("setExitCode", js_set_exit_code);
  EXPORT("exit", js_exit);
  EXPORT("installExitHooks", js_install_exit_hooks);
  EXPORT("detachWorkers", js_detach_workers);
  EXPORT("unshare", js_unshare);
  EXPORT("mount", js_mount);
  EXPORT("loopbackUp", js_loopback_up);
  EXPORT("prctl", js_prctl);
  EXPORT("dropPrivileges", js_drop_privileges);
  EXPORT("setrlimit", js_setrlimit);
  EXPORT("setsid", js_setsid);
  EXPORT("dup2", js_dup2);
  EXPORT("close", js_close);
  EXPORT("signal", js_signal);
  EXPORT("wait", js_wait);
  EXPORT("recvmsg", js_recvmsg);
  EXPORT("sendmsg", js_sendmsg);
  EXPORT("memfd", js_memfd);
  EXPORT("getpid", js_getpid);
  return exports;
}

int32_t node_api_module_get_api_version_v1(void) { return 8; }
