/*
 * fcntl_lock.node: POSIX record locks (fcntl F_SETLK) on an open file, which Node cannot take.
 * The account files' lock of shadow-utils and glibc (lckpwdf) is an fcntl write lock on
 * /etc/.pwd.lock: flock(2) locks are a separate kind on Linux and do not exclude it, so a writer
 * of the account files beside useradd must take this very kind.
 *
 *   tryWriteLock(fd: number) -> boolean   a write lock on the whole file: true when taken, false
 *                                         when another process holds a conflicting lock (the call
 *                                         never blocks the event loop; the caller waits and tries again)
 *
 * The lock is the process's and goes when the process closes any descriptor of the file (fcntl
 * semantics) or exits: a killed daemon never leaves it held.
 *
 * Throws an Error (with .code = the errno name and .errno = its number) on any other failure.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <node_api.h>

#include "napi_errno.h"

static napi_value try_write_lock(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  napi_valuetype type = napi_undefined;
  if (argc >= 1 && napi_typeof(env, argv[0], &type) != napi_ok) return NULL;
  double number = -1;
  if (type == napi_number && napi_get_value_double(env, argv[0], &number) != napi_ok) return NULL;
  if (type != napi_number || !(number >= 0 && number <= 2147483647.0) || (double)(int)number != number) {
    napi_throw_type_error(env, NULL, "tryWriteLock(fd): fd must be a file descriptor (an integer >= 0)");
    return NULL;
  }
  int fd = (int)number;

  struct flock lock;
  memset(&lock, 0, sizeof lock);
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET; /* l_start 0, l_len 0: the whole file, as lckpwdf locks it */
  int taken = 1;
  if (fcntl(fd, F_SETLK, &lock) != 0) {
    if (errno != EACCES && errno != EAGAIN) {
      throw_errno(env, "fcntl(F_SETLK, F_WRLCK)", fd, errno);
      return NULL;
    }
    taken = 0;
  }
  napi_value result;
  if (napi_get_boolean(env, taken, &result) != napi_ok) return NULL;
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "tryWriteLock", NAPI_AUTO_LENGTH, try_write_lock, NULL, &fn) != napi_ok)
    return NULL;
  if (napi_set_named_property(env, exports, "tryWriteLock", fn) != napi_ok) return NULL;
  return exports;
}
