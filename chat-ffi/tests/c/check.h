/* The checks the C test programs share. Each program counts its failed
 * checks in `failures` and exits non-zero when there are any. */

#ifndef CHAT_TEST_CHECK_H
#define CHAT_TEST_CHECK_H

#include <stdio.h>

#include "chat.h"

static int failures = 0;

/* Checks that `call` returned `want`; prints the library's reason if not. */
#define EXPECT(want, call)                                                        \
  do {                                                                            \
    enum chat_code got_ = (call);                                                 \
    if (got_ != (want)) {                                                         \
      char *why_ = chat_last_error_message();                                     \
      fprintf(stderr, "%s:%d: %s returned %d, want %d (%s)\n", __FILE__, __LINE__, \
              #call, (int)got_, (int)(want), why_ ? why_ : "no reason");          \
      chat_string_free(why_);                                                     \
      failures++;                                                                 \
    }                                                                             \
  } while (0)

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                         \
    }                                                                     \
  } while (0)

#endif
