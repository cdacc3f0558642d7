/* A C program over chat.h, run by tests/c_abi.rs against a real server.
 *
 * argv: base URL, room name. The harness has registered "alice" and "bob"
 * (password "password-<name>"), created the public room and made both
 * members. Every return code is checked; every handle and string is freed,
 * so that valgrind reports no leak. Exit 0 on success, 1 on a failed check. */

#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

static int count_occurrences(const char *haystack, const char *needle) {
  int n = 0;
  for (const char *p = haystack; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

/* What a connection's callback saw; it runs on a library thread. */
struct inbox {
  pthread_mutex_t lock;
  int messages;
  int with_live_body;
  int after_unsubscribe;
  int after_resubscribe;
  int64_t last_seq;
  /* Changes to messages, in the order they came. */
  int edited;
  int reacted_after_edit;
};

static void on_event(void *userdata, const char *event_json) {
  struct inbox *inbox = userdata;
  pthread_mutex_lock(&inbox->lock);
  if (strstr(event_json, "\"type\":\"message\"") != NULL) {
    inbox->messages++;
    if (strstr(event_json, "live from alice") != NULL) inbox->with_live_body++;
    if (strstr(event_json, "after unsubscribe") != NULL) inbox->after_unsubscribe++;
    if (strstr(event_json, "after resubscribe") != NULL) inbox->after_resubscribe++;
    const char *seq = strstr(event_json, "\"seq\":");
    if (seq) inbox->last_seq = strtoll(seq + 6, NULL, 10);
  }
  if (strstr(event_json, "\"type\":\"message_edited\"") != NULL &&
      strstr(event_json, "changed from C") != NULL)
    inbox->edited++;
  if (strstr(event_json, "\"type\":\"reaction\"") != NULL &&
      strstr(event_json, "\"added\":true") != NULL && inbox->edited > 0)
    inbox->reacted_after_edit++;
  pthread_mutex_unlock(&inbox->lock);
}

/* What the completions of non-blocking sends saw. */
struct sends {
  pthread_mutex_t lock;
  int done;
  int ok;
  int64_t last_seq;
};

static void on_sent(void *userdata, enum chat_code code, int64_t seq, const char *error) {
  struct sends *sends = userdata;
  pthread_mutex_lock(&sends->lock);
  sends->done++;
  if (code == CHAT_OK && error == NULL && seq > sends->last_seq) {
    sends->ok++;
    sends->last_seq = seq;
  } else if (code == CHAT_CLOSED && error != NULL) {
    /* Freed before the ack: expected for the last one only. */
  } else {
    fprintf(stderr, "async send: code %d seq %lld (%s)\n", (int)code, (long long)seq,
            error ? error : "no reason");
  }
  pthread_mutex_unlock(&sends->lock);
}

/* Waits up to 5 s for the inbox to hold `want` messages. */
static int wait_for_messages(struct inbox *inbox, int want) {
  for (int i = 0; i < 500; i++) {
    pthread_mutex_lock(&inbox->lock);
    int have = inbox->messages;
    pthread_mutex_unlock(&inbox->lock);
    if (have >= want) return have;
    struct timespec tick = {0, 10 * 1000 * 1000};
    nanosleep(&tick, NULL);
  }
  return -1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s BASE_URL ROOM\n", argv[0]);
    return 2;
  }
  const char *url = argv[1];
  const char *room = argv[2];

  /* Invalid arguments: NULL and bytes that are not UTF-8. */
  chat_client *bad = NULL;
  EXPECT(CHAT_INVALID_ARG, chat_client_new(NULL, &bad));
  EXPECT(CHAT_INVALID_ARG, chat_client_new(url, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_client_new("http://\xff\xfe/", &bad));
  CHECK(bad == NULL);
  char *reason = chat_last_error_message();
  CHECK(reason != NULL && strstr(reason, "UTF-8") != NULL);
  chat_string_free(reason);
  EXPECT(CHAT_INVALID_ARG, chat_login(NULL, "alice", "x"));
  chat_string_free(NULL);
  chat_client_free(NULL);

  chat_client *alice = NULL, *bob = NULL, *carol = NULL;
  EXPECT(CHAT_OK, chat_client_new(url, &alice));
  EXPECT(CHAT_OK, chat_client_new_with_tls(url, NULL, false, &bob));
  EXPECT(CHAT_OK, chat_client_new(url, &carol));
  if (!alice || !bob || !carol) {
    fprintf(stderr, "no client\n");
    return 1;
  }

  /* Registration: a fresh user, then a taken name. */
  EXPECT(CHAT_OK, chat_register(carol, "carol", "carol@example.com", "password-carol", NULL));
  EXPECT(CHAT_CONFLICT, chat_register(carol, "carol", "carol2@example.com", "password-carol", "C"));
  EXPECT(CHAT_INVALID_ARG, chat_register(carol, "dave", NULL, "password-dave", NULL));
  EXPECT(CHAT_INVALID_ARG, chat_login(carol, "carol", "\xc3\x28"));
  EXPECT(CHAT_UNAUTHORIZED, chat_login(carol, "carol", "wrong password"));
  EXPECT(CHAT_OK, chat_login(carol, "carol", "password-carol"));
  EXPECT(CHAT_OK, chat_logout(carol));
  /* Logging out everywhere: every token of carol's stops working. */
  EXPECT(CHAT_OK, chat_login(carol, "carol", "password-carol"));
  EXPECT(CHAT_OK, chat_logout_everywhere(carol));
  int64_t carol_id = 0;
  EXPECT(CHAT_UNAUTHORIZED, chat_me_id(carol, &carol_id));

  EXPECT(CHAT_OK, chat_login(alice, "alice", "password-alice"));
  EXPECT(CHAT_OK, chat_login(bob, "bob", "password-bob"));

  /* Messages over HTTP, blocking until stored. */
  int64_t seq1 = 0, seq2 = 0, seq3 = 0;
  EXPECT(CHAT_OK, chat_send_http(alice, room, "hello from C", &seq1));
  EXPECT(CHAT_OK, chat_send_http(alice, room, "second", &seq2));
  EXPECT(CHAT_OK, chat_send_http(bob, room, "hi alice", &seq3));
  CHECK(seq1 > 0 && seq2 == seq1 + 1 && seq3 == seq2 + 1);
  EXPECT(CHAT_OK, chat_send_http(bob, room, "no seq wanted", NULL));
  EXPECT(CHAT_INVALID_ARG, chat_send_http(bob, room, NULL, NULL));
  EXPECT(CHAT_INVALID_INPUT, chat_send_http(bob, room, "", NULL));
  EXPECT(CHAT_NOT_FOUND, chat_send_http(bob, "no-such-room", "hi", NULL));

  /* History as JSON text. */
  char *json = NULL;
  EXPECT(CHAT_OK, chat_history_json(bob, room, 0, 0, 0, &json));
  CHECK(json != NULL);
  if (json) {
    CHECK(strstr(json, "\"chat_history\"") != NULL);
    CHECK(strstr(json, "hello from C") != NULL);
    CHECK(strstr(json, "hi alice") != NULL);
    CHECK(count_occurrences(json, "\"seq\"") == 4);
  }
  chat_string_free(json);
  json = NULL;
  EXPECT(CHAT_OK, chat_history_json(alice, room, 0, seq1, 1, &json));
  if (json) {
    CHECK(strstr(json, "hello from C") == NULL);
    CHECK(strstr(json, "second") != NULL);
    CHECK(count_occurrences(json, "\"seq\"") == 1);
    CHECK(strstr(json, "\"has_more\":true") != NULL);
  }
  chat_string_free(json);
  EXPECT(CHAT_INVALID_ARG, chat_history_json(alice, room, 0, 0, 0, NULL));

  /* Unread counts: a send marks the room read up to it. Alice's last read is
   * her "second"; Bob's two later messages are unread for her. Bob sent last,
   * so he has read everything. */
  uint64_t unread_alice = 99, unread_bob = 99;
  EXPECT(CHAT_OK, chat_unread_count(alice, &unread_alice));
  EXPECT(CHAT_OK, chat_unread_count(bob, &unread_bob));
  printf("unread: alice=%llu bob=%llu\n", (unsigned long long)unread_alice,
         (unsigned long long)unread_bob);
  CHECK(unread_alice == 2);
  CHECK(unread_bob == 0);
  EXPECT(CHAT_INVALID_ARG, chat_unread_count(bob, NULL));

  /* Rooms: a public one anyone may join, a private one only the invited. */
  int64_t pub_id = 0, priv_id = 0;
  EXPECT(CHAT_OK, chat_create_room(alice, "c-public", CHAT_ROOM_PUBLIC, &pub_id));
  EXPECT(CHAT_OK, chat_create_room(alice, "c-private", CHAT_ROOM_PRIVATE, &priv_id));
  CHECK(pub_id > 0 && priv_id > 0 && pub_id != priv_id);
  EXPECT(CHAT_OK, chat_create_room(alice, "c-game", CHAT_ROOM_GAME, NULL));
  EXPECT(CHAT_CONFLICT, chat_create_room(bob, "c-public", CHAT_ROOM_PUBLIC, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_create_room(bob, "c-bad-kind", 7, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_create_room(bob, NULL, CHAT_ROOM_PUBLIC, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_create_room(NULL, "c-x", CHAT_ROOM_PUBLIC, NULL));
  EXPECT(CHAT_INVALID_INPUT, chat_create_room(bob, "", CHAT_ROOM_PUBLIC, NULL));
  EXPECT(CHAT_OK, chat_join_room(bob, pub_id));
  EXPECT(CHAT_OK, chat_join_room(bob, pub_id));
  EXPECT(CHAT_NOT_FOUND, chat_join_room(bob, priv_id));
  EXPECT(CHAT_NOT_FOUND, chat_join_room(bob, 999999));
  EXPECT(CHAT_INVALID_ARG, chat_join_room(bob, 0));
  EXPECT(CHAT_INVALID_ARG, chat_join_room(NULL, pub_id));

  /* The room list as JSON: Bob sees the lobby and the public room he
   * joined, not Alice's private one. */
  char *rooms = NULL;
  EXPECT(CHAT_OK, chat_rooms_json(bob, &rooms));
  CHECK(rooms != NULL);
  if (rooms) {
    CHECK(rooms[0] == '[');
    CHECK(strstr(rooms, "\"name\":\"c-public\"") != NULL);
    CHECK(strstr(rooms, "\"name\":\"c-lobby\"") != NULL);
    CHECK(strstr(rooms, "c-private") == NULL);
    CHECK(count_occurrences(rooms, "\"unread_count\"") == 2);
  }
  chat_string_free(rooms);
  rooms = NULL;
  EXPECT(CHAT_OK, chat_rooms_json(alice, &rooms));
  if (rooms) {
    CHECK(strstr(rooms, "\"type\":\"private\"") != NULL);
    CHECK(strstr(rooms, "\"type\":\"game\"") != NULL);
    CHECK(count_occurrences(rooms, "\"unread_count\"") == 4);
  }
  chat_string_free(rooms);
  EXPECT(CHAT_INVALID_ARG, chat_rooms_json(alice, NULL));

  /* Per-room unread counts: Alice's two messages are unread for Bob in the
   * public room only. */
  uint64_t room_unread = 99;
  EXPECT(CHAT_OK, chat_send_http(alice, "c-public", "public one", NULL));
  EXPECT(CHAT_OK, chat_send_http(alice, "c-public", "public two", NULL));
  EXPECT(CHAT_OK, chat_room_unread_count(bob, pub_id, &room_unread));
  CHECK(room_unread == 2);
  EXPECT(CHAT_OK, chat_room_unread_count(alice, pub_id, &room_unread));
  CHECK(room_unread == 0);
  EXPECT(CHAT_NOT_FOUND, chat_room_unread_count(bob, priv_id, &room_unread));
  EXPECT(CHAT_INVALID_ARG, chat_room_unread_count(bob, pub_id, NULL));
  EXPECT(CHAT_OK, chat_unread_count(bob, &unread_bob));
  CHECK(unread_bob == 2);

  /* Leaving: the room and its unread messages are no longer Bob's. */
  EXPECT(CHAT_OK, chat_leave_room(bob, pub_id));
  EXPECT(CHAT_NOT_FOUND, chat_room_unread_count(bob, pub_id, &room_unread));
  EXPECT(CHAT_OK, chat_unread_count(bob, &unread_bob));
  CHECK(unread_bob == 0);
  EXPECT(CHAT_INVALID_ARG, chat_leave_room(bob, -3));

  /* Running the room: a role, settings, the directory, a block, a report. */
  int64_t bob_me = 0, alice_me = 0;
  EXPECT(CHAT_OK, chat_me_id(bob, &bob_me));
  EXPECT(CHAT_OK, chat_me_id(alice, &alice_me));
  EXPECT(CHAT_OK, chat_join_room(bob, pub_id));
  char request[160];
  snprintf(request, sizeof request,
           "{\"user_id\":%lld,\"action\":\"set_role\",\"role\":\"admin\"}", (long long)bob_me);
  char *event = NULL;
  EXPECT(CHAT_OK, chat_moderate(alice, pub_id, request, &event));
  CHECK(event != NULL && strstr(event, "\"change\":\"role_changed\"") != NULL);
  chat_string_free(event);
  snprintf(request, sizeof request, "{\"user_id\":%lld,\"action\":\"kick\"}",
           (long long)alice_me);
  EXPECT(CHAT_FORBIDDEN, chat_moderate(bob, pub_id, request, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_moderate(alice, pub_id, "not json", NULL));
  EXPECT(CHAT_INVALID_ARG, chat_moderate(alice, 0, request, NULL));
  char *room_json = NULL;
  EXPECT(CHAT_OK, chat_update_room(bob, pub_id, "{\"topic\":\"from C\"}", &room_json));
  CHECK(room_json != NULL && strstr(room_json, "\"topic\":\"from C\"") != NULL);
  chat_string_free(room_json);
  char *directory = NULL;
  EXPECT(CHAT_OK, chat_directory_json(bob, "C-PUB", NULL, 0, &directory));
  CHECK(directory != NULL && strstr(directory, "\"name\":\"c-public\"") != NULL);
  CHECK(directory != NULL && strstr(directory, "c-private") == NULL);
  chat_string_free(directory);
  EXPECT(CHAT_OK, chat_block_user(alice, bob_me, true));
  EXPECT(CHAT_OK, chat_block_user(alice, bob_me, false));
  EXPECT(CHAT_INVALID_ARG, chat_block_user(alice, -1, true));
  snprintf(request, sizeof request, "{\"user_id\":%lld,\"reason\":\"from C\"}",
           (long long)bob_me);
  char *report = NULL;
  EXPECT(CHAT_OK, chat_report(alice, request, &report));
  CHECK(report != NULL && strstr(report, "\"reason\":\"from C\"") != NULL);
  chat_string_free(report);
  EXPECT(CHAT_OK, chat_leave_room(bob, pub_id));

  /* One message's life: sent with its id, edited, reacted to, deleted. */
  int64_t mid = 0, mseq = 0;
  char *changed = NULL;
  EXPECT(CHAT_OK, chat_send_message(alice, room, "tpyo", &mid, &mseq));
  CHECK(mid > 0 && mseq > seq3);
  EXPECT(CHAT_OK, chat_send_message(bob, room, "no ids wanted", NULL, NULL));
  EXPECT(CHAT_OK, chat_edit_message(alice, mid, "typo, fixed", &changed));
  CHECK(changed != NULL);
  if (changed) {
    CHECK(strstr(changed, "\"body\":\"typo, fixed\"") != NULL);
    CHECK(strstr(changed, "\"version\":1") != NULL);
    CHECK(strstr(changed, "\"edited_at\"") != NULL);
  }
  chat_string_free(changed);
  changed = NULL;
  EXPECT(CHAT_FORBIDDEN, chat_edit_message(bob, mid, "mine now", NULL));
  EXPECT(CHAT_INVALID_INPUT, chat_edit_message(alice, mid, "", NULL));
  EXPECT(CHAT_NOT_FOUND, chat_edit_message(alice, 999999999, "x", NULL));
  EXPECT(CHAT_INVALID_ARG, chat_edit_message(alice, 0, "x", NULL));
  EXPECT(CHAT_INVALID_ARG, chat_edit_message(alice, mid, NULL, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_edit_message(NULL, mid, "x", NULL));
  /* U+1F44D, thumbs up, in UTF-8. */
  EXPECT(CHAT_OK, chat_react(bob, mid, "\xf0\x9f\x91\x8d", true, &changed));
  CHECK(changed != NULL);
  if (changed) {
    CHECK(strstr(changed, "\"count\":1") != NULL);
    CHECK(strstr(changed, "\"me\":true") != NULL);
  }
  chat_string_free(changed);
  changed = NULL;
  EXPECT(CHAT_OK, chat_react(bob, mid, "+1", true, NULL));
  EXPECT(CHAT_INVALID_INPUT, chat_react(bob, mid, "two words", true, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_react(bob, mid, NULL, true, NULL));
  EXPECT(CHAT_OK, chat_react(bob, mid, "\xf0\x9f\x91\x8d", false, &changed));
  if (changed) {
    CHECK(strstr(changed, "\"key\":\"+1\"") != NULL);
    CHECK(count_occurrences(changed, "\"key\"") == 1);
  }
  chat_string_free(changed);
  changed = NULL;
  EXPECT(CHAT_OK, chat_pin_message(alice, mid, true, &changed));
  if (changed) CHECK(strstr(changed, "\"pinned\":true") != NULL);
  chat_string_free(changed);
  changed = NULL;
  EXPECT(CHAT_FORBIDDEN, chat_pin_message(bob, mid, false, NULL));
  EXPECT(CHAT_OK, chat_pin_message(alice, mid, false, NULL));
  EXPECT(CHAT_FORBIDDEN, chat_delete_message(bob, mid, NULL));
  EXPECT(CHAT_OK, chat_delete_message(alice, mid, &changed));
  if (changed) {
    CHECK(strstr(changed, "\"deleted\":true") != NULL);
    CHECK(strstr(changed, "\"body\":\"\"") != NULL);
    CHECK(strstr(changed, "reactions") == NULL);
  }
  chat_string_free(changed);
  EXPECT(CHAT_OK, chat_delete_message(alice, mid, NULL));
  EXPECT(CHAT_CONFLICT, chat_edit_message(alice, mid, "back", NULL));
  EXPECT(CHAT_CONFLICT, chat_react(bob, mid, "+1", true, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_delete_message(alice, -1, NULL));

  /* A thread: a reply quoting its root, in its thread, mentioning Bob. */
  int64_t bob_id = 0, root_id = 0, reply_id = 0;
  EXPECT(CHAT_OK, chat_me_id(bob, &bob_id));
  CHECK(bob_id > 0);
  EXPECT(CHAT_INVALID_ARG, chat_me_id(bob, NULL));
  EXPECT(CHAT_OK, chat_send_message(alice, room, "lunch?", &root_id, NULL));
  int64_t mentioned[2] = {bob_id, bob_id};
  EXPECT(CHAT_OK, chat_send_reply(alice, room, "noon, @bob", root_id, root_id,
                                  mentioned, 2, &reply_id, NULL));
  CHECK(reply_id > root_id);
  /* Bob's room list counts the mention until Bob reads (or sends). */
  char *listed = NULL;
  EXPECT(CHAT_OK, chat_rooms_json(bob, &listed));
  if (listed) CHECK(strstr(listed, "\"mention_count\":1") != NULL);
  chat_string_free(listed);
  EXPECT(CHAT_OK, chat_send_reply(bob, room, "ok", 0, reply_id, NULL, 0, NULL, NULL));
  EXPECT(CHAT_NOT_FOUND, chat_send_reply(bob, room, "x", 999999999, 0, NULL, 0, NULL, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_send_reply(bob, room, "x", 0, 0, NULL, 1, NULL, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_send_reply(bob, room, "x", -1, 0, NULL, 0, NULL, NULL));
  char *thread = NULL;
  EXPECT(CHAT_OK, chat_thread_json(bob, reply_id, 0, 50, &thread));
  CHECK(thread != NULL);
  if (thread) {
    CHECK(strstr(thread, "\"reply_count\":2") != NULL);
    CHECK(strstr(thread, "\"snippet\":\"lunch?\"") != NULL);
    CHECK(count_occurrences(thread, "\"thread_root\"") == 2);
    CHECK(count_occurrences(thread, "\"mentions\"") == 1);
  }
  chat_string_free(thread);
  thread = NULL;
  EXPECT(CHAT_NOT_FOUND, chat_thread_json(bob, 999999999, 0, 50, &thread));
  EXPECT(CHAT_INVALID_INPUT, chat_thread_json(bob, root_id, 0, 0, &thread));
  EXPECT(CHAT_INVALID_ARG, chat_thread_json(bob, root_id, 0, 50, NULL));

  /* Search: every word, newest first; the deleted message is gone. */
  char *found = NULL;
  EXPECT(CHAT_OK, chat_search_json(bob, "HELLO from", 0, 0, &found));
  CHECK(found != NULL);
  if (found) {
    CHECK(strstr(found, "\"hits\"") != NULL);
    CHECK(strstr(found, "hello from C") != NULL);
    CHECK(count_occurrences(found, "\"room_name\"") == 1);
  }
  chat_string_free(found);
  found = NULL;
  EXPECT(CHAT_OK, chat_search_json(bob, "fixed", 0, 0, &found));
  if (found) CHECK(strstr(found, "\"hits\":[]") != NULL);
  chat_string_free(found);
  EXPECT(CHAT_INVALID_INPUT, chat_search_json(bob, "?!", 0, 0, &found));
  EXPECT(CHAT_INVALID_ARG, chat_search_json(bob, "x", -1, 0, &found));
  EXPECT(CHAT_INVALID_ARG, chat_search_json(bob, "x", 0, 0, NULL));

  /* Live: Bob's connection delivers through a callback what Alice's sends. */
  struct inbox inbox = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, 0, 0};
  chat_connection *alice_conn = NULL, *bob_conn = NULL;
  EXPECT(CHAT_INVALID_ARG, chat_connect(NULL, &bob_conn));
  EXPECT(CHAT_OK, chat_connect(alice, &alice_conn));
  EXPECT(CHAT_OK, chat_connect(bob, &bob_conn));
  if (!alice_conn || !bob_conn) {
    fprintf(stderr, "no connection\n");
    return 1;
  }
  int64_t room_id = 0, room_id_again = 0;
  EXPECT(CHAT_OK, chat_subscribe(bob_conn, room, &room_id));
  EXPECT(CHAT_OK, chat_subscribe(alice_conn, room, &room_id_again));
  CHECK(room_id > 0 && room_id == room_id_again);
  enum chat_state state = CHAT_STATE_CLOSED;
  EXPECT(CHAT_OK, chat_connection_state(bob_conn, &state));
  CHECK(state == CHAT_STATE_CONNECTED);
  EXPECT(CHAT_INVALID_ARG, chat_connection_state(bob_conn, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_connection_state(NULL, &state));
  chat_listener *listener = NULL, *late = NULL;
  EXPECT(CHAT_INVALID_ARG, chat_listen(NULL, on_event, &inbox, &listener));
  EXPECT(CHAT_INVALID_ARG, chat_listen(bob_conn, NULL, &inbox, &listener));
  EXPECT(CHAT_OK, chat_listen(bob_conn, on_event, &inbox, &listener));
  /* The four earlier messages are replayed from the subscription point or
   * not, as the server decides; count from what is there now. */
  int64_t live1 = 0, live2 = 0;
  EXPECT(CHAT_OK, chat_connection_send(alice_conn, room, "live from alice 1", &live1));
  EXPECT(CHAT_OK, chat_connection_send(alice_conn, room, "live from alice 2", &live2));
  CHECK(live1 > seq3 && live2 == live1 + 1);
  EXPECT(CHAT_INVALID_ARG, chat_connection_send(alice_conn, room, NULL, NULL));
  for (int i = 0; i < 500; i++) {
    pthread_mutex_lock(&inbox.lock);
    int live = inbox.with_live_body;
    pthread_mutex_unlock(&inbox.lock);
    if (live >= 2) break;
    struct timespec tick = {0, 10 * 1000 * 1000};
    nanosleep(&tick, NULL);
  }
  CHECK(wait_for_messages(&inbox, 2) >= 2);
  pthread_mutex_lock(&inbox.lock);
  CHECK(inbox.with_live_body == 2);
  CHECK(inbox.last_seq == live2);
  pthread_mutex_unlock(&inbox.lock);

  /* Bob has two unread; marking read up to the last clears them. */
  EXPECT(CHAT_OK, chat_unread_count(bob, &unread_bob));
  CHECK(unread_bob == 2);
  EXPECT(CHAT_OK, chat_mark_read(bob_conn, room_id, live2));
  EXPECT(CHAT_OK, chat_unread_count(bob, &unread_bob));
  CHECK(unread_bob == 0);

  /* Changes reach the callback as events of their own, in order. */
  int64_t to_change = 0;
  EXPECT(CHAT_OK, chat_send_message(alice, room, "to be changed", &to_change, NULL));
  EXPECT(CHAT_OK, chat_edit_message(alice, to_change, "changed from C", NULL));
  EXPECT(CHAT_OK, chat_react(bob, to_change, "+1", true, NULL));
  for (int i = 0; i < 500; i++) {
    pthread_mutex_lock(&inbox.lock);
    int heard = inbox.reacted_after_edit;
    pthread_mutex_unlock(&inbox.lock);
    if (heard) break;
    struct timespec tick = {0, 10 * 1000 * 1000};
    nanosleep(&tick, NULL);
  }
  pthread_mutex_lock(&inbox.lock);
  CHECK(inbox.edited == 1);
  CHECK(inbox.reacted_after_edit == 1);
  pthread_mutex_unlock(&inbox.lock);

  /* Unregistering: no callback after it returns. */
  chat_listener_free(listener);
  pthread_mutex_lock(&inbox.lock);
  int seen = inbox.messages;
  pthread_mutex_unlock(&inbox.lock);
  EXPECT(CHAT_OK, chat_connection_send(alice_conn, room, "unseen", NULL));
  struct timespec settle = {0, 200 * 1000 * 1000};
  nanosleep(&settle, NULL);
  pthread_mutex_lock(&inbox.lock);
  CHECK(inbox.messages == seen);
  pthread_mutex_unlock(&inbox.lock);

  /* Non-blocking sends: each completes once, before free returns. */
  struct sends sends = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
  EXPECT(CHAT_INVALID_ARG, chat_connection_send_async(alice_conn, room, "x", NULL, &sends));
  EXPECT(CHAT_OK, chat_connection_send_async(alice_conn, room, "async 1", on_sent, &sends));
  EXPECT(CHAT_OK, chat_connection_send_async(alice_conn, room, "async 2", on_sent, &sends));
  EXPECT(CHAT_OK, chat_connection_send_async(alice_conn, room, "async 3", on_sent, &sends));
  for (int i = 0; i < 500; i++) {
    pthread_mutex_lock(&sends.lock);
    int done = sends.done;
    pthread_mutex_unlock(&sends.lock);
    if (done >= 3) break;
    struct timespec tick = {0, 10 * 1000 * 1000};
    nanosleep(&tick, NULL);
  }
  pthread_mutex_lock(&sends.lock);
  CHECK(sends.done == 3 && sends.ok == 3);
  pthread_mutex_unlock(&sends.lock);
  /* One more, freed at once: it completes (stored, or CHAT_CLOSED) before
   * free returns. */
  EXPECT(CHAT_OK, chat_connection_send_async(alice_conn, room, "async 4", on_sent, &sends));

  /* Unsubscribing: no event of the room after it returns. The socket keeps
   * its order, so once the message sent after resubscribing has arrived,
   * the one sent in between would have arrived before it. */
  chat_listener *again = NULL;
  EXPECT(CHAT_OK, chat_listen(bob_conn, on_event, &inbox, &again));
  EXPECT(CHAT_INVALID_ARG, chat_unsubscribe(bob_conn, NULL));
  EXPECT(CHAT_INVALID_ARG, chat_unsubscribe(NULL, room));
  EXPECT(CHAT_OK, chat_unsubscribe(bob_conn, room));
  EXPECT(CHAT_OK, chat_connection_send(alice_conn, room, "after unsubscribe", NULL));
  EXPECT(CHAT_OK, chat_subscribe(bob_conn, room, NULL));
  EXPECT(CHAT_OK, chat_connection_send(alice_conn, room, "after resubscribe", NULL));
  for (int i = 0; i < 500; i++) {
    pthread_mutex_lock(&inbox.lock);
    int heard = inbox.after_resubscribe;
    pthread_mutex_unlock(&inbox.lock);
    if (heard) break;
    struct timespec tick = {0, 10 * 1000 * 1000};
    nanosleep(&tick, NULL);
  }
  pthread_mutex_lock(&inbox.lock);
  CHECK(inbox.after_resubscribe == 1);
  CHECK(inbox.after_unsubscribe == 0);
  pthread_mutex_unlock(&inbox.lock);
  chat_listener_free(again);

  /* Freeing joins the event thread; `inbox` and `sends` may go after it. A
   * registration may outlive its connection and is freed after it. */
  EXPECT(CHAT_OK, chat_listen(bob_conn, on_event, &inbox, &late));
  chat_connection_free(bob_conn);
  chat_listener_free(late);
  chat_listener_free(NULL);
  chat_connection_free(alice_conn);
  CHECK(sends.done == 4);
  pthread_mutex_destroy(&sends.lock);
  chat_connection_free(NULL);
  pthread_mutex_destroy(&inbox.lock);

  /* After logout the session is gone. */
  EXPECT(CHAT_OK, chat_logout(bob));
  EXPECT(CHAT_UNAUTHORIZED, chat_unread_count(bob, &unread_bob));

  chat_client_free(alice);
  chat_client_free(bob);
  chat_client_free(carol);

  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("smoke: all checks passed\n");
  return 0;
}
