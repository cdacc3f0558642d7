//! Typing and presence over real sockets.

use serde_json::json;

use crate::support::{Backend, TestServer, each_backend};

each_backend!(
    presence_follows_the_last_socket,
    typing_is_throttled_per_socket
);

async fn presence_follows_the_last_socket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    let mut a = s.ws("/ws/", &ann).await;
    a.subscribe(json!(room), None).await;

    let online = json!({"type": "presence", "room": room, "user": bob.id, "status": "online"});
    let offline = json!({"type": "presence", "room": room, "user": bob.id, "status": "offline"});
    let mut b1 = s.ws(&format!("/ws/chat/{room}/"), &bob).await;
    b1.expect("subscribed").await;
    assert_eq!(a.expect("presence").await, online);

    // A second socket of the same user announces nothing; neither does
    // closing one of the two.
    let mut b2 = s.ws("/ws/", &bob).await;
    b2.subscribe(json!(room), None).await;
    b1.close().await;
    a.expect_quiet().await;
    // Ann's own socket did not hear about herself.
    b2.close().await;
    assert_eq!(a.expect("presence").await, offline);
    a.expect_quiet().await;

    // A newcomer learns who is already here.
    let cat = s.user("cat").await;
    let mut c = s.ws("/ws/", &cat).await;
    let (_, _, here) = c.subscribe_seeing(json!(room), None).await;
    assert_eq!(
        here,
        vec![json!({"type": "presence", "room": room, "user": ann.id, "status": "online"})]
    );
    assert_eq!(a.expect("presence").await["user"], cat.id);

    // Unsubscribing is leaving too.
    let mut b3 = s.ws("/ws/", &bob).await;
    b3.subscribe(json!(room), None).await;
    assert_eq!(a.expect("presence").await, online);
    b3.send(json!({"type": "unsubscribe", "room": room})).await;
    assert_eq!(a.expect("presence").await, offline);
}

async fn typing_is_throttled_per_socket(backend: Backend) {
    let s = TestServer::start(backend).await;
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    let mut a = s.ws("/ws/", &ann).await;
    a.subscribe(json!(room), None).await;
    let mut b = s.ws("/ws/", &bob).await;
    b.subscribe(json!(room), None).await;
    a.expect("presence").await;

    // A burst of keystrokes: the room hears once, the sender gets no errors.
    for _ in 0..10 {
        b.send(json!({"type": "typing", "room": room})).await;
    }
    b.expect_quiet().await;
    assert_eq!(
        a.expect("typing").await,
        json!({"type": "typing", "room": room, "user": bob.id})
    );
    a.expect_quiet().await;

    // Typing in a room one is not in is refused like any other frame.
    let secret = s.room(&ann, "secret", "private", &[]).await;
    b.send(json!({"type": "typing", "room": secret})).await;
    assert_eq!(b.expect("error").await["code"], "room_not_found");
}
