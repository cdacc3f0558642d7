/* Attachments from C, run by tests/c_abi/attachments.rs against a real
 * server: upload a file with progress, send it with a message, download it
 * to another path and compare, and what a stranger gets.
 *
 * argv: base URL, room name, a directory to write files in. The harness
 * has registered "alice" and "bob" (members of the public room) and
 * "carol" (not a member), password "password-<name>". Every handle and
 * string is freed, so that valgrind reports no leak. Exit 0 on success, 1
 * on a failed check. */

#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

/* What a progress callback saw. */
struct progress {
  pthread_t caller;
  int calls;
  int not_rising;
  int other_thread;
  uint64_t done;
  uint64_t total;
};

static void on_progress(void *userdata, uint64_t done, uint64_t total) {
  struct progress *p = userdata;
  if (p->calls > 0 && done <= p->done) p->not_rising++;
  if (!pthread_equal(pthread_self(), p->caller)) p->other_thread++;
  p->calls++;
  p->done = done;
  p->total = total;
}

static struct progress progress_here(void) {
  struct progress p;
  memset(&p, 0, sizeof p);
  p.caller = pthread_self();
  return p;
}

/* Checks a finished transfer's progress: several calls, rising, on this
 * thread, ending at `size` of `size`. */
static void check_progress(const struct progress *p, uint64_t size, int line) {
  if (p->calls < 2 || p->not_rising || p->other_thread || p->done != size || p->total != size) {
    fprintf(stderr, "line %d: progress: %d calls, %d not rising, %d off-thread, %llu of %llu (want %llu)\n",
            line, p->calls, p->not_rising, p->other_thread, (unsigned long long)p->done,
            (unsigned long long)p->total, (unsigned long long)size);
    failures++;
  }
}

/* The number after `"key":` in `json`, or -1. */
static int64_t json_int(const char *json, const char *key) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\":", key);
  const char *at = json ? strstr(json, pattern) : NULL;
  return at ? strtoll(at + strlen(pattern), NULL, 10) : -1;
}

/* The whole file at `path` into a new buffer (`*len` its size), or NULL. */
static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *data = malloc(size > 0 ? (size_t)size : 1);
  if (data && fread(data, 1, (size_t)size, f) != (size_t)size) {
    free(data);
    data = NULL;
  }
  fclose(f);
  *len = (size_t)size;
  return data;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s BASE_URL ROOM DIR\n", argv[0]);
    return 2;
  }
  const char *url = argv[1];
  const char *room = argv[2];
  const char *dir = argv[3];
  char upload_path[4096], download_path[4096], part_path[4096], stranger_path[4096],
      missing_path[4096];
  snprintf(upload_path, sizeof upload_path, "%s/upload.bin", dir);
  snprintf(download_path, sizeof download_path, "%s/download.bin", dir);
  snprintf(part_path, sizeof part_path, "%s/download.bin.part", dir);
  snprintf(stranger_path, sizeof stranger_path, "%s/stranger.bin", dir);
  snprintf(missing_path, sizeof missing_path, "%s/missing.bin", dir);

  chat_client *alice = NULL, *bob = NULL, *carol = NULL;
  EXPECT(CHAT_OK, chat_client_new(url, &alice));
  EXPECT(CHAT_OK, chat_client_new(url, &bob));
  EXPECT(CHAT_OK, chat_client_new(url, &carol));
  if (!alice || !bob || !carol) {
    fprintf(stderr, "no client\n");
    return 1;
  }
  EXPECT(CHAT_OK, chat_login(alice, "alice", "password-alice"));
  EXPECT(CHAT_OK, chat_login(bob, "bob", "password-bob"));
  EXPECT(CHAT_OK, chat_login(carol, "carol", "password-carol"));

  /* A file of 1 MiB and a bit, of pseudo-random bytes. */
  const size_t size = 1024 * 1024 + 123;
  unsigned char *data = malloc(size);
  uint32_t state = 12345;
  for (size_t i = 0; i < size; i++) {
    state = state * 1103515245u + 12345u;
    data[i] = (unsigned char)(state >> 16);
  }
  FILE *f = fopen(upload_path, "wb");
  CHECK(f != NULL && fwrite(data, 1, size, f) == size);
  if (f) fclose(f);

  /* Upload, with progress on this thread. */
  struct progress up = progress_here();
  char *json = NULL;
  EXPECT(CHAT_OK, chat_upload_file(alice, upload_path, on_progress, &up, &json));
  check_progress(&up, size, __LINE__);
  int64_t id = json_int(json, "id");
  CHECK(id > 0);
  CHECK(json_int(json, "size") == (int64_t)size);
  CHECK(json && strstr(json, "\"name\":\"upload.bin\"") != NULL);
  chat_string_free(json);
  json = NULL;

  /* Unsent: nobody else sees it. */
  EXPECT(CHAT_NOT_FOUND, chat_attachment_json(bob, id, &json));
  CHECK(json == NULL);

  /* Sent with an empty body; members see it in the history. */
  int64_t message_id = 0, seq = 0;
  EXPECT(CHAT_OK, chat_send_attachments(alice, room, "", &id, 1, &message_id, &seq));
  CHECK(message_id > 0 && seq > 0);
  EXPECT(CHAT_OK, chat_history_json(bob, room, 0, 0, 0, &json));
  CHECK(json && strstr(json, "\"attachments\"") != NULL && strstr(json, "upload.bin") != NULL);
  chat_string_free(json);
  json = NULL;
  EXPECT(CHAT_OK, chat_attachment_json(bob, id, &json));
  CHECK(json_int(json, "message_id") == message_id);
  chat_string_free(json);
  json = NULL;

  /* Downloaded by a member to another path: the same bytes, no `.part`. */
  struct progress down = progress_here();
  EXPECT(CHAT_OK, chat_download_file(bob, id, download_path, false, on_progress, &down));
  check_progress(&down, size, __LINE__);
  size_t got_len = 0;
  unsigned char *got = read_file(download_path, &got_len);
  CHECK(got != NULL && got_len == size && memcmp(got, data, size) == 0);
  free(got);
  CHECK(access(part_path, F_OK) != 0);
  /* Without a callback too. */
  EXPECT(CHAT_OK, chat_download_file(alice, id, download_path, false, NULL, NULL));

  /* A stranger: not found, and no file left behind. */
  EXPECT(CHAT_NOT_FOUND, chat_attachment_json(carol, id, &json));
  EXPECT(CHAT_NOT_FOUND, chat_download_file(carol, id, stranger_path, false, NULL, NULL));
  CHECK(access(stranger_path, F_OK) != 0);
  /* Not an image: no thumbnail. */
  EXPECT(CHAT_NOT_FOUND, chat_download_file(bob, id, stranger_path, true, NULL, NULL));

  /* Sent once, and not deletable on its own. */
  EXPECT(CHAT_CONFLICT, chat_send_attachments(alice, room, "again", &id, 1, NULL, NULL));
  EXPECT(CHAT_CONFLICT, chat_delete_attachment(alice, id));

  /* From memory, then deleted while unsent. */
  EXPECT(CHAT_OK, chat_upload_bytes(alice, "note.txt", (const uint8_t *)"hello", 5, &json));
  int64_t note = json_int(json, "id");
  CHECK(note > 0 && json_int(json, "size") == 5);
  chat_string_free(json);
  json = NULL;
  EXPECT(CHAT_NOT_FOUND, chat_delete_attachment(bob, note));
  EXPECT(CHAT_OK, chat_delete_attachment(alice, note));
  EXPECT(CHAT_NOT_FOUND, chat_attachment_json(alice, note, &json));

  /* Local failures and bad arguments. */
  EXPECT(CHAT_IO, chat_upload_file(alice, missing_path, NULL, NULL, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_upload_file(alice, NULL, NULL, NULL, &json));
  EXPECT(CHAT_INVALID_ARG, chat_upload_bytes(alice, "x", NULL, 3, &json));
  EXPECT(CHAT_INVALID_ARG, chat_download_file(alice, 0, download_path, false, NULL, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_attachment_json(alice, id, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_send_attachments(alice, room, "x", NULL, 1, NULL, NULL));
  int64_t bad = -5;
  EXPECT(CHAT_INVALID_ARG, chat_send_attachments(alice, room, "x", &bad, 1, NULL, NULL));
  CHECK(json == NULL);

  free(data);
  chat_client_free(alice);
  chat_client_free(bob);
  chat_client_free(carol);

  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("attachments: all checks passed\n");
  return 0;
}
