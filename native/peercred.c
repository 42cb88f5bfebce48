/*
 * peercred.node: the credentials of the process at the other end of a connected Unix-domain
 * socket, as the kernel recorded them when that process called connect() (SO_PEERCRED). The API
 * server uses them to know which Unix user is calling; nothing the caller sends can change them.
 *
 *   peerCredentials(fd: number) -> { pid: number, uid: number, gid: number }
 *
 * Throws an Error (with .code = the errno name and .errno = its number when a system call failed)
 * when the fd is not a connected (not listening) Unix-domain socket whose peer credentials the
 * kernel knows.
 *
 * Built without node-gyp by native/build.sh against the headers of the node-api-headers package;
 * the napi_* symbols are resolved from the node binary when the addon is loaded.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <node_api.h>

#include "napi_errno.h"

static napi_value set_number(napi_env env, napi_value object, const char *key, double value) {
  napi_value v;
  if (napi_create_double(env, value, &v) != napi_ok) return NULL;
  if (napi_set_named_property(env, object, key, v) != napi_ok) return NULL;
  return object;
}

static napi_value peer_credentials(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1) {
    napi_throw_type_error(env, NULL, "peerCredentials(fd): fd is missing");
    return NULL;
  }
  napi_valuetype type;
  if (napi_typeof(env, argv[0], &type) != napi_ok) return NULL;
  double number = -1;
  if (type == napi_number && napi_get_value_double(env, argv[0], &number) != napi_ok) return NULL;
  if (type != napi_number || !(number >= 0 && number <= 2147483647.0) || (double)(int)number != number) {
    napi_throw_type_error(env, NULL, "peerCredentials(fd): fd must be a file descriptor (an integer >= 0)");
    return NULL;
  }
  int fd = (int)number;

  /* SO_PEERCRED answers for any socket, with made-up values (uid 65534) where the kernel has no
   * peer: refuse everything but a Unix-domain socket, and a peer without a recorded pid. */
  int domain = 0;
  socklen_t length = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0) {
    throw_errno(env, "getsockopt(SO_DOMAIN)", fd, errno);
    return NULL;
  }
  if (domain != AF_UNIX) {
    char message[128];
    snprintf(message, sizeof message, "fd %d is not a Unix-domain socket (address family %d)", fd, domain);
    napi_throw_error(env, NULL, message);
    return NULL;
  }

  /* A listening socket answers with the credentials of whoever called listen(): ours. */
  int listening = 0;
  length = sizeof listening;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) != 0) {
    throw_errno(env, "getsockopt(SO_ACCEPTCONN)", fd, errno);
    return NULL;
  }
  if (listening) {
    char message[128];
    snprintf(message, sizeof message, "fd %d is a listening socket, not a connection", fd);
    napi_throw_error(env, NULL, message);
    return NULL;
  }

  struct ucred cred;
  memset(&cred, 0, sizeof cred);
  length = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
    throw_errno(env, "getsockopt(SO_PEERCRED)", fd, errno);
    return NULL;
  }
  if (length != sizeof cred || cred.pid <= 0) {
    /* Not connected, or the peer lives in a pid namespace we cannot see into. */
    char message[160];
    snprintf(message, sizeof message, "fd %d: the kernel has no credentials of a peer process (not connected?)", fd);
    napi_throw_error(env, NULL, message);
    return NULL;
  }

  napi_value result;
  if (napi_create_object(env, &result) != napi_ok) return NULL;
  if (set_number(env, result, "pid", (double)cred.pid) == NULL ||
      set_number(env, result, "uid", (double)cred.uid) == NULL ||
      set_number(env, result, "gid", (double)cred.gid) == NULL)
    return NULL;
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "peerCredentials", NAPI_AUTO_LENGTH, peer_credentials, NULL, &fn) != napi_ok)
    return NULL;
  if (napi_set_named_property(env, exports, "peerCredentials", fn) != napi_ok) return NULL;
  return exports;
}
