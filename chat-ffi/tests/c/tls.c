/* The C ABI over HTTPS and WSS, run by tests/c_abi.rs against a real server
 * started with the self-signed development certificate.
 *
 * argv: base URL (https://localhost:PORT), path of the development CA (PEM),
 * a room name to create. The server is empty: this program registers its
 * own users. Every return code is checked. Exit 0 on success, 1 on a failed
 * check. */

#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

/* The whole file as a NUL-terminated string (the caller frees it), or NULL. */
static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *text = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 8192;
      char *bigger = realloc(text, cap);
      if (!bigger) {
        free(text);
        fclose(f);
        return NULL;
      }
      text = bigger;
    }
    size_t n = fread(text + len, 1, 4096, f);
    len += n;
    if (n < 4096) break;
  }
  fclose(f);
  text[len] = '\0';
  return text;
}

struct inbox {
  pthread_mutex_t lock;
  int over_https;
};

static void on_event(void *userdata, const char *event_json) {
  struct inbox *inbox = userdata;
  pthread_mutex_lock(&inbox->lock);
  if (strstr(event_json, "\"type\":\"message\"") && strstr(event_json, "over https"))
    inbox->over_https++;
  pthread_mutex_unlock(&inbox->lock);
}

/* Registers and logs in `name` with password "password-<name>". */
static void sign_up(chat_client *client, const char *name) {
  char email[64], password[64];
  snprintf(email, sizeof email, "%s@example.com", name);
  snprintf(password, sizeof password, "password-%s", name);
  EXPECT(CHAT_OK, chat_register(client, name, email, password, NULL));
  EXPECT(CHAT_OK, chat_login(client, name, password));
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s HTTPS_BASE_URL CA_PEM_PATH ROOM\n", argv[0]);
    return 2;
  }
  const char *url = argv[1];
  const char *ca_path = argv[2];
  const char *room = argv[3];
  char *ca_pem = read_file(ca_path);
  if (!ca_pem || !strstr(ca_pem, "BEGIN CERTIFICATE")) {
    fprintf(stderr, "cannot read a PEM certificate from %s\n", ca_path);
    free(ca_pem);
    return 1;
  }

  /* Without the CA the certificate is refused, and says so. */
  chat_client *stranger = NULL;
  EXPECT(CHAT_OK, chat_client_new(url, &stranger));
  if (stranger) {
    EXPECT(CHAT_NETWORK,
           chat_register(stranger, "eve", "eve@example.com", "password-eve", NULL));
    char *why = chat_last_error_message();
    CHECK(why != NULL && strstr(why, "certificate") != NULL);
    if (why) printf("without the CA: %s\n", why);
    chat_string_free(why);
  }
  chat_client_free(stranger);

  /* Bad TLS arguments. */
  chat_client *bad = NULL;
  EXPECT(CHAT_INVALID_ARG, chat_client_new_with_ca_file(url, "/nonexistent/ca.pem", &bad));
  EXPECT(CHAT_INVALID_ARG, chat_client_new_with_ca_file(url, NULL, &bad));
  EXPECT(CHAT_INVALID_ARG, chat_client_new_with_tls(url, "\xff not pem", false, &bad));
  EXPECT(CHAT_INVALID_ARG, chat_client_new_with_tls(url, ca_pem, false, NULL));
  CHECK(bad == NULL);

  /* Trusting the CA: as PEM text, and as a file. */
  chat_client *ann = NULL, *bob = NULL;
  EXPECT(CHAT_OK, chat_client_new_with_tls(url, ca_pem, false, &ann));
  EXPECT(CHAT_OK, chat_client_new_with_ca_file(url, ca_path, &bob));
  free(ca_pem);
  if (!ann || !bob) {
    fprintf(stderr, "no client\n");
    return 1;
  }
  sign_up(ann, "ann");
  sign_up(bob, "bob");
  int64_t room_id = 0, subscribed_id = 0;
  EXPECT(CHAT_OK, chat_create_room(ann, room, CHAT_ROOM_PUBLIC, &room_id));

  /* WSS: Bob's subscription joins the public room; Ann's HTTPS send reaches
   * his callback; his WSS send is stored after it. */
  chat_connection *conn = NULL;
  EXPECT(CHAT_OK, chat_connect(bob, &conn));
  if (!conn) {
    fprintf(stderr, "no connection\n");
    return 1;
  }
  enum chat_state state = CHAT_STATE_CLOSED;
  EXPECT(CHAT_OK, chat_connection_state(conn, &state));
  CHECK(state == CHAT_STATE_CONNECTED);
  EXPECT(CHAT_OK, chat_subscribe(conn, room, &subscribed_id));
  CHECK(room_id > 0 && subscribed_id == room_id);
  struct inbox inbox = {PTHREAD_MUTEX_INITIALIZER, 0};
  chat_listener *listener = NULL;
  EXPECT(CHAT_OK, chat_listen(conn, on_event, &inbox, &listener));
  int64_t https_seq = 0, wss_seq = 0;
  EXPECT(CHAT_OK, chat_send_http(ann, room, "over https", &https_seq));
  for (int i = 0; i < 500; i++) {
    pthread_mutex_lock(&inbox.lock);
    int heard = inbox.over_https;
    pthread_mutex_unlock(&inbox.lock);
    if (heard) break;
    struct timespec tick = {0, 10 * 1000 * 1000};
    nanosleep(&tick, NULL);
  }
  pthread_mutex_lock(&inbox.lock);
  CHECK(inbox.over_https == 1);
  pthread_mutex_unlock(&inbox.lock);
  EXPECT(CHAT_OK, chat_connection_send(conn, room, "over wss", &wss_seq));
  CHECK(https_seq > 0 && wss_seq == https_seq + 1);
  chat_listener_free(listener);
  chat_connection_free(conn);
  pthread_mutex_destroy(&inbox.lock);

  char *json = NULL;
  EXPECT(CHAT_OK, chat_history_json(ann, room, 0, 0, 0, &json));
  if (json) {
    const char *https = strstr(json, "over https");
    const char *wss = strstr(json, "over wss");
    CHECK(https != NULL && wss != NULL && https < wss);
  }
  chat_string_free(json);

  /* Turning the checks off also connects (for tests only). */
  chat_client *careless = NULL;
  EXPECT(CHAT_OK, chat_client_new_with_tls(url, NULL, true, &careless));
  if (careless) EXPECT(CHAT_OK, chat_login(careless, "ann", "password-ann"));
  chat_client_free(careless);

  chat_client_free(ann);
  chat_client_free(bob);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("tls: all checks passed\n");
  return 0;
}
