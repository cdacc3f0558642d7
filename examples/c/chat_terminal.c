/* chat_terminal: a tiny terminal chat client over the C ABI (chat.h).
 *
 * It logs in, joins a room, prints every message of the room as
 * "<sender>: <body>" from the event callback, and sends each line read
 * from stdin. End with EOF (Ctrl-D) or "/quit".
 *
 * Build (from the repository root; see the Makefile beside this file):
 *
 *   cargo build -p chat-ffi
 *   make -C examples/c            # or, by hand:
 *   cc -std=c11 -Wall -Ichat-ffi/include examples/c/chat_terminal.c \
 *      -Ltarget/debug -Wl,-rpath,$PWD/target/debug -lchat_ffi -lpthread \
 *      -o chat_terminal
 *
 * Run:
 *
 *   ./chat_terminal http://127.0.0.1:8000 ann password-ann lobby
 *   ./chat_terminal https://localhost:8443 ann password-ann lobby ca.pem
 *
 * The room is joined by subscribing to it, which joins a public room
 * (PROTOCOL.md, WebSocket); a private room needs an invitation and
 * chat_join_room first. The optional last argument is a CA certificate
 * (PEM file) to trust, e.g. the one a server started with
 * --tls-self-signed prints. chat-ffi/tests/c_abi/example.rs runs this
 * program against a real server. */

#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"

/* Prints why the last call failed, then frees the reason. */
static void report(const char *what, enum chat_code code) {
  char *why = chat_last_error_message();
  fprintf(stderr, "%s failed (code %d): %s\n", what, (int)code, why ? why : "no reason");
  chat_string_free(why);
}

/* Copies the JSON string value of the first `"key":` in `json` into `out`
 * (at most `cap` bytes with the NUL), undoing the common escapes. A real app
 * uses a JSON parser; this keeps the example free of dependencies. Returns
 * 0 if the key is missing. */
static int json_string(const char *json, const char *key, char *out, size_t cap) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
  const char *p = strstr(json, pattern);
  if (!p || cap == 0) return 0;
  p += strlen(pattern);
  size_t n = 0;
  while (*p && *p != '"' && n + 1 < cap) {
    char c = *p++;
    if (c == '\\' && *p) {
      char e = *p++;
      switch (e) {
        case 'n': c = '\n'; break;
        case 't': c = '\t'; break;
        case 'u': c = '?'; p += strnlen(p, 4); break; /* not decoded here */
        default: c = e; /* \" \\ \/ */
      }
    }
    out[n++] = c;
  }
  out[n] = '\0';
  return 1;
}

/* Runs on a library thread, one event at a time: it only prints, since a
 * callback may not call the library's blocking functions. */
static void on_event(void *userdata, const char *event_json) {
  (void)userdata;
  if (strstr(event_json, "\"type\":\"message\"")) {
    char sender[128], body[4096];
    if (json_string(event_json, "sender_name", sender, sizeof sender) &&
        json_string(event_json, "body", body, sizeof body)) {
      printf("%s: %s\n", sender, body);
      fflush(stdout);
    }
  } else if (strstr(event_json, "\"type\":\"state\"")) {
    char state[32];
    if (json_string(event_json, "state", state, sizeof state)) {
      fprintf(stderr, "(connection %s)\n", state);
    }
  } else if (strstr(event_json, "\"type\":\"room_deleted\"")) {
    fprintf(stderr, "(the room was deleted)\n");
  }
}

int main(int argc, char **argv) {
  if (argc != 5 && argc != 6) {
    fprintf(stderr, "usage: %s BASE_URL USERNAME PASSWORD ROOM [CA_PEM_FILE]\n", argv[0]);
    return 2;
  }
  const char *url = argv[1], *username = argv[2], *password = argv[3], *room = argv[4];
  int status = 1;
  chat_client *client = NULL;
  chat_connection *conn = NULL;
  chat_listener *listener = NULL;
  enum chat_code code;

  code = argc == 6 ? chat_client_new_with_ca_file(url, argv[5], &client)
                   : chat_client_new(url, &client);
  if (code != CHAT_OK) {
    report("creating the client", code);
    return 1;
  }
  if ((code = chat_login(client, username, password)) != CHAT_OK) {
    report("login", code);
    goto out;
  }
  if ((code = chat_connect(client, &conn)) != CHAT_OK) {
    report("connecting", code);
    goto out;
  }
  /* Listening before subscribing: no message of the room is missed. */
  if ((code = chat_listen(conn, on_event, NULL, &listener)) != CHAT_OK) {
    report("listening", code);
    goto out;
  }
  int64_t room_id = 0;
  if ((code = chat_subscribe(conn, room, &room_id)) != CHAT_OK) {
    report("joining the room", code);
    goto out;
  }
  printf("joined #%s (room %lld) as %s; type a line to send it, Ctrl-D to quit\n", room,
         (long long)room_id, username);
  fflush(stdout);

  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  status = 0;
  while ((len = getline(&line, &cap, stdin)) != -1) {
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
    if (len == 0) continue;
    if (strcmp(line, "/quit") == 0) break;
    int64_t seq = 0;
    code = chat_connection_send(conn, room, line, &seq);
    if (code == CHAT_CLOSED) {
      report("sending", code);
      status = 1;
      break;
    }
    if (code != CHAT_OK) report("sending", code); /* e.g. too long: keep going */
  }
  free(line);

out:
  /* After chat_listener_free returns no callback runs; the order of these
   * frees is the safe one, though each accepts NULL. */
  chat_listener_free(listener);
  chat_connection_free(conn);
  chat_client_free(client);
  return status;
}
