/*
 * napi_errno.h: one way for the addons to fail a call whose system call failed: an Error whose
 * message says what failed, on which descriptor (fd >= 0) and why, with .code (the errno name) and .errno
 * (its negative number) as Node's own errors have them. Included by each addon (one file each).
 */
#ifndef NODEMGR_NAPI_ERRNO_H
#define NODEMGR_NAPI_ERRNO_H

#include <stdio.h>
#include <string.h>

#include <node_api.h>

static void throw_errno(napi_env env, const char *what, int fd, int err) {
  char message[256];
  const char *name = strerrorname_np(err);
  if (fd >= 0)
    snprintf(message, sizeof message, "%s on fd %d: %s", what, fd, strerror(err));
  else /* a call that is not about one of the caller's descriptors */
    snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_value msg, error, code, number;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
      napi_create_error(env, NULL, msg, &error) != napi_ok) {
    napi_throw_error(env, NULL, message);
    return;
  }
  if (name != NULL && napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) == napi_ok)
    napi_set_named_property(env, error, "code", code);
  if (napi_create_int32(env, -err, &number) == napi_ok)
    napi_set_named_property(env, error, "errno", number);
  napi_throw(env, error);
}

#endif
