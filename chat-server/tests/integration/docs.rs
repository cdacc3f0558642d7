//! The generated documentation: OpenAPI at `/schema/`, Swagger UI served
//! from the binary at `/schema/swagger-ui/`, the frame JSON Schema at
//! `/schema/ws/`, checked against the contract and against real frames.

use std::collections::BTreeSet;

use chat_core::frame::{ClientFrame, PresenceStatus, ServerFrame};
use chat_core::message::{Message, Reaction};
use chat_core::moderation::{ModerateRequest, ModerationAction, Role, RoomSettings, RoomUpdate};
use chat_core::timeline::{MemberChange, MemberEvent, MessageUpdate, ReactionEvent};
use chat_core::{ErrorCode, MessageId, RoomId, RoomRef, Timestamp, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer};

/// Every call of PROTOCOL.md's users, rooms, messages and operations
/// tables, and whether it needs a token. The conversation calls join this
/// list when their handlers are documented.
const CALLS: &[(&str, &str, bool)] = &[
    ("post", "/api/users/register/", false),
    ("post", "/api/users/token/", false),
    ("post", "/api/users/token/refresh/", false),
    ("post", "/api/users/logout/", false),
    ("get", "/api/users/", true),
    ("get", "/api/users/me/", true),
    ("post", "/chat/create-room/", true),
    ("post", "/chat/join-room/", true),
    ("get", "/chat/rooms/", true),
    ("get", "/chat/rooms/{id}/", true),
    ("post", "/chat/rooms/{id}/invite/", true),
    ("post", "/chat/rooms/{id}/leave/", true),
    ("delete", "/chat/rooms/{id}/", true),
    ("get", "/chat/history/", true),
    ("post", "/chat/send/", true),
    ("get", "/api/chats/conversations/", true),
    ("get", "/api/chats/conversations/{id}/", true),
    ("post", "/api/chats/conversations/create/", true),
    ("get", "/api/chats/unread-count/", true),
    ("get", "/healthz", false),
];

const CLIENT_TYPES: &[&str] = &[
    "send",
    "subscribe",
    "unsubscribe",
    "read",
    "typing",
    "edit",
    "delete",
    "react",
    "unreact",
    "pin",
    "unpin",
    "moderate",
    "update_room",
    "block",
    "unblock",
    "report",
    "ping",
    "auth",
];
const SERVER_TYPES: &[&str] = &[
    "message",
    "member",
    "message_edited",
    "message_deleted",
    "reaction",
    "message_pinned",
    "message_unpinned",
    "room_updated",
    "ack",
    "subscribed",
    "read",
    "typing",
    "presence",
    "room_deleted",
    "pong",
    "authenticated",
    "error",
];

/// A client that shows redirects instead of following them, so a redirect
/// loop or a detour fails the test.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

async fn fetch(s: &TestServer, path: &str) -> (StatusCode, String, Vec<u8>) {
    let resp = raw_client()
        .get(s.url(path))
        .send()
        .await
        .expect("request sent");
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.bytes().await.expect("body").to_vec();
    (status, content_type, body)
}

async fn openapi(s: &TestServer) -> Value {
    let (status, doc) = s.call("GET", "/schema/", None, None).await;
    assert_eq!(status, StatusCode::OK, "GET /schema/: {doc}");
    doc
}

/// The path item for `path`, keyed with or without its trailing slash.
fn path_item<'a>(doc: &'a Value, path: &str) -> &'a Value {
    let paths = &doc["paths"];
    let trimmed = path.trim_end_matches('/');
    [path.to_owned(), trimmed.to_owned(), format!("{trimmed}/")]
        .iter()
        .map(|p| &paths[p.as_str()])
        .find(|item| !item.is_null())
        .unwrap_or_else(|| panic!("{path} is not in the OpenAPI paths"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_call_and_its_errors() {
    let s = TestServer::start(Backend::Memory).await;
    let doc = openapi(&s).await;
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "OpenAPI 3, got {version}");

    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "The `access` token of `POST /api/users/token/` or `/api/users/token/refresh/`"})
    );
    // Prometheus text, not JSON: documented apart from the JSON calls.
    let metrics = &path_item(&doc, "/metrics")["get"];
    assert_eq!(
        metrics["responses"]["200"]["content"]["text/plain"]["schema"]["type"], "string",
        "{metrics}"
    );

    let error_ref = json!("#/components/schemas/ErrorBody");
    let mut operation_ids = BTreeSet::new();
    for &(method, path, authenticated) in CALLS {
        let op = &path_item(&doc, path)[method];
        assert!(op.is_object(), "{method} {path} is not documented");
        let id = op["operationId"].as_str().expect("operationId");
        assert!(
            operation_ids.insert(id),
            "{method} {path}: operationId {id} is taken (code generators need them unique)"
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{method} {path} has no tag"
        );
        let responses = op["responses"].as_object().expect("responses");
        if authenticated {
            assert_eq!(
                op["security"],
                json!([{"bearer": []}]),
                "{method} {path} needs a token"
            );
            assert!(responses.contains_key("401"), "{method} {path}: no 401");
        } else {
            assert!(op["security"].is_null(), "{method} {path} needs no token");
        }
        if op["requestBody"].is_object() {
            for status in ["400", "413"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} takes a body but documents no {status}"
                );
            }
        }
        if path != "/healthz" {
            assert!(responses.contains_key("503"), "{method} {path}: no 503");
        }
        let successes = responses.keys().filter(|k| k.starts_with('2')).count();
        assert!(successes > 0, "{method} {path} documents no success");
        for (status, response) in responses {
            let is_error = status.starts_with('4') || status.starts_with('5');
            if !is_error || path == "/healthz" {
                continue;
            }
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"], error_ref,
                "{method} {path} {status} should have an ErrorBody"
            );
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| d.contains('`')),
                "{method} {path} {status} should name its codes"
            );
        }
    }

    // Path parameters and query strings.
    let detail = &path_item(&doc, "/chat/rooms/{id}/")["get"];
    assert_eq!(detail["parameters"][0]["name"], "id");
    assert_eq!(detail["parameters"][0]["in"], "path");
    let history: BTreeSet<&str> = path_item(&doc, "/chat/history/")["get"]["parameters"]
        .as_array()
        .expect("history parameters")
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        history,
        BTreeSet::from(["room", "before", "after", "limit"])
    );
    let users: BTreeSet<&str> = path_item(&doc, "/api/users/")["get"]["parameters"]
        .as_array()
        .expect("users parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(users, BTreeSet::from(["limit", "after"]));
    // The bounds the server enforces are the schema's (hostile.rs checks
    // the server's side).
    let param = |path: &str, name: &str| {
        path_item(&doc, path)["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} {name}"))["schema"]
            .clone()
    };
    for (path, name, min, max) in [
        ("/chat/history/", "limit", 1, Some(200)),
        ("/chat/history/", "before", 1, None),
        ("/chat/history/", "after", 0, None),
        ("/api/users/", "limit", 1, Some(200)),
        ("/chat/search/", "limit", 1, Some(100)),
        ("/chat/search/", "before", 1, None),
        ("/chat/directory/", "limit", 1, Some(100)),
    ] {
        let schema = param(path, name);
        assert_eq!(schema["minimum"], min, "{path} {name}: {schema}");
        if let Some(max) = max {
            assert_eq!(schema["maximum"], max, "{path} {name}: {schema}");
        }
    }
    assert_eq!(param("/chat/search/", "q")["minLength"], 1);

    // The wire types, as chat-core describes them.
    let schemas = &doc["components"]["schemas"];
    for name in schemas.as_object().expect("schemas").keys() {
        // A lowercase name is a Rust alias utoipa could not see through
        // (`Seq` became `i64`); such fields need `value_type`.
        assert!(
            name.starts_with(|c: char| c.is_ascii_uppercase()),
            "component {name} should be a named wire type"
        );
    }
    for id in ["UserId", "RoomId", "MessageId"] {
        assert_eq!(schemas[id]["type"], "integer", "{id}");
        assert_eq!(schemas[id]["format"], "int64", "{id}");
        assert_eq!(schemas[id]["minimum"], 1, "{id}");
    }
    assert_eq!(schemas["Timestamp"]["type"], "string");
    assert_eq!(schemas["Timestamp"]["format"], "date-time");
    assert_eq!(schemas["ErrorCode"]["type"], "string");
    let codes = schemas["ErrorCode"]["enum"].as_array().expect("code enum");
    for code in [
        "invalid_input",
        "unauthorized",
        "room_not_found",
        "storage_unavailable",
    ] {
        assert!(codes.contains(&json!(code)), "ErrorCode lacks {code}");
    }
    assert_eq!(
        schemas["ErrorBody"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    assert!(schemas["ClientFrame"].is_object() && schemas["ServerFrame"].is_object());

    // The frame schema and the WebSocket endpoints are linked from the page.
    let description = doc["info"]["description"].as_str().expect("description");
    for needle in [
        "(/schema/ws/)",
        "`/ws/`",
        "`/ws/chat/{room}/`",
        "`/ws/users/{user_id}/`",
    ] {
        assert!(description.contains(needle), "description lacks {needle}");
    }
}

/// A path typo in an annotation would document a call nobody serves: every
/// documented operation must reach a handler (which, with no token and no
/// body, refuses it), never the router's fallbacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed() {
    let s = TestServer::start(Backend::Memory).await;
    let doc = openapi(&s).await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 13, "only {} paths", paths.len());
    for (path, item) in paths {
        let concrete = path.replace("{id}", "1");
        for method in item.as_object().expect("path item").keys() {
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let resp = raw_client()
                .request(method.clone(), s.url(&concrete))
                .send()
                .await
                .expect("request");
            let status = resp.status();
            // Not every documented call answers JSON (`/metrics` is text).
            let body: Value =
                serde_json::from_slice(&resp.bytes().await.expect("body")).unwrap_or(Value::Null);
            assert!(
                !matches!(
                    body["code"].as_str(),
                    Some("not_found" | "method_not_allowed")
                ),
                "{method} {path} is documented but not routed: {status} {body}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_is_served_from_the_binary() {
    let s = TestServer::start(Backend::Memory).await;
    let (status, content_type, page) = fetch(&s, "/schema/swagger-ui/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = String::from_utf8(page).expect("UTF-8 page");
    assert!(
        page.contains(r#"<base href="/schema/swagger-ui/">"#),
        "relative asset URLs must resolve under /schema/swagger-ui/ with or without the slash"
    );

    // Without the slash, and by name: the same page, no redirect (the server
    // strips trailing slashes, so a redirect to the slash form would loop).
    for alias in ["/schema/swagger-ui", "/schema/swagger-ui/index.html"] {
        let (status, _, same) = fetch(&s, alias).await;
        assert_eq!(status, StatusCode::OK, "{alias}");
        assert_eq!(String::from_utf8_lossy(&same), page, "{alias}");
    }

    let urls = attribute_values(&page, &["src", "href"]);
    for url in &urls {
        let external =
            url.starts_with("http:") || url.starts_with("https:") || url.starts_with("//");
        assert!(!external, "Swagger UI must work offline, but loads {url}");
    }
    let assets: Vec<String> = urls
        .iter()
        .filter(|u| u.ends_with(".js") || u.ends_with(".css") || u.ends_with(".png"))
        .map(|u| match u.strip_prefix('/') {
            Some(_) => u.clone(),
            None => format!("/schema/swagger-ui/{}", u.trim_start_matches("./")),
        })
        .collect();
    for needed in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        assert!(
            assets.iter().any(|a| a.ends_with(needed)),
            "the page does not load {needed}: {assets:?}"
        );
    }
    for asset in &assets {
        let (status, _, body) = fetch(&s, asset).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(!body.is_empty(), "{asset} is empty");
        if asset.ends_with(".css") {
            let css = String::from_utf8_lossy(&body);
            assert!(
                !css.contains("url(http")
                    && !css.contains("url(\"http")
                    && !css.contains("@import"),
                "{asset} loads something from elsewhere"
            );
        }
    }

    let (_, content_type, init) = fetch(&s, "/schema/swagger-ui/swagger-initializer.js").await;
    assert!(content_type.contains("javascript"), "{content_type}");
    let init = String::from_utf8(init).expect("UTF-8 script");
    assert!(
        init.contains(r#""url": "/schema/""#),
        "the initializer should load /schema/: {init}"
    );
    assert!(
        init.contains(r#""validatorUrl": "none""#),
        "the online validator badge would call swagger.io: {init}"
    );

    let (status, _, _) = fetch(&s, "/schema/swagger-ui/no-such-file.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The values of the named attributes in an HTML page.
fn attribute_values(html: &str, attributes: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for attribute in attributes {
        let needle = format!("{attribute}=\"");
        let mut rest = html;
        while let Some(start) = rest.find(&needle) {
            let after = &rest[start + needle.len()..];
            let end = after.find('"').expect("closing quote");
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

async fn frame_schema(s: &TestServer) -> Value {
    let (status, schema) = s.call("GET", "/schema/ws/", None, None).await;
    assert_eq!(status, StatusCode::OK, "GET /schema/ws/: {schema}");
    schema
}

/// The `type` of each branch of a frame union.
fn frame_types<'a>(schema: &'a Value, def: &str) -> BTreeSet<&'a str> {
    schema["$defs"][def]["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{def} is not a oneOf"))
        .iter()
        .filter_map(|branch| branch["properties"]["type"]["const"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_schema_names_every_frame() {
    let s = TestServer::start(Backend::Memory).await;
    let schema = frame_schema(&s).await;
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(
        schema["properties"]["client"]["$ref"],
        "#/$defs/ClientFrame"
    );
    assert_eq!(
        schema["properties"]["server"]["$ref"],
        "#/$defs/ServerFrame"
    );
    assert_eq!(
        frame_types(&schema, "ClientFrame"),
        CLIENT_TYPES.iter().copied().collect()
    );
    assert_eq!(
        frame_types(&schema, "ServerFrame"),
        SERVER_TYPES.iter().copied().collect()
    );
    let untyped = schema["$defs"]["ClientFrame"]["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .find(|b| b["properties"]["type"].is_null())
        .expect("the {\"message\"} form");
    assert_eq!(untyped["properties"]["message"]["type"], "string");
    assert_eq!(untyped["required"], json!(["message"]));
}

/// Frames validated against the served schema: every variant as chat-core
/// serializes it, what a real server sends over a real socket, and frames
/// the server refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_frames_match_the_frame_schema() {
    let s = TestServer::start(Backend::Memory).await;
    let schema = frame_schema(&s).await;
    let validator = Validator::new(schema);

    let room = RoomRef::Name("lobby".to_owned());
    let client_frames = [
        ClientFrame::Text {
            message: "hi".to_owned(),
        },
        ClientFrame::Send {
            room: Some(room.clone()),
            body: "hi".to_owned(),
            client_id: Some("c-1".to_owned()),
            reply_to: None,
            thread_root: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        },
        ClientFrame::Send {
            room: None,
            body: "hi".to_owned(),
            client_id: None,
            reply_to: None,
            thread_root: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        },
        ClientFrame::Subscribe {
            room: RoomRef::Id(RoomId(7)),
            after_seq: Some(41),
        },
        ClientFrame::Unsubscribe { room: room.clone() },
        ClientFrame::Read {
            room: room.clone(),
            seq: 3,
        },
        ClientFrame::Typing { room },
        ClientFrame::Edit {
            message_id: MessageId(9),
            body: "fixed".to_owned(),
        },
        ClientFrame::Delete {
            message_id: MessageId(9),
        },
        ClientFrame::React {
            message_id: MessageId(9),
            key: "👍".to_owned(),
        },
        ClientFrame::Unreact {
            message_id: MessageId(9),
            key: "👍".to_owned(),
        },
        ClientFrame::Pin {
            message_id: MessageId(9),
        },
        ClientFrame::Unpin {
            message_id: MessageId(9),
        },
        ClientFrame::Moderate {
            room: RoomRef::Id(RoomId(2)),
            request: ModerateRequest {
                user_id: UserId(3),
                action: ModerationAction::Ban,
                reason: Some("spam".to_owned()),
                until: Some(Timestamp::parse("2026-02-25T10:31:00Z").expect("time")),
                role: None,
            },
        },
        ClientFrame::UpdateRoom {
            room: RoomRef::Id(RoomId(2)),
            settings: RoomSettings {
                topic: Some("news".to_owned()),
                slow_mode_seconds: Some(30),
                ..RoomSettings::default()
            },
        },
        ClientFrame::Block {
            user_id: UserId(3),
            block: true,
        },
        ClientFrame::Block {
            user_id: UserId(3),
            block: false,
        },
        ClientFrame::Report {
            request: chat_core::admin::ReportRequest {
                message_id: Some(MessageId(9)),
                user_id: None,
                reason: "spam".to_owned(),
            },
        },
        ClientFrame::Ping,
        ClientFrame::Auth {
            token: "a.b.c".to_owned(),
        },
    ];
    for frame in &client_frames {
        validator.client(&serde_json::to_value(frame).expect("serializes"));
    }
    // What the server refuses, the schema refuses.
    for bad in [
        json!({"type": "send"}),
        json!({"type": "subscribe"}),
        json!({"type": "read", "room": 1}),
        json!({"type": "auth"}),
        json!({"type": "edit", "message_id": 1}),
        json!({"type": "delete"}),
        json!({"type": "react", "message_id": 1}),
        json!({"type": "nope"}),
        json!({"message": 5}),
        json!({}),
        json!("ping"),
    ] {
        assert!(
            ClientFrame::from_json(&bad.to_string()).is_err(),
            "the server accepts {bad}"
        );
        validator.not_client(&bad);
    }

    let message = Message {
        id: MessageId(1),
        room: RoomId(2),
        seq: 1,
        sender: UserId(3),
        sender_name: "ann".to_owned(),
        body: "hi".to_owned(),
        created_at: Timestamp::parse("2026-02-24T10:30:00Z").expect("time"),
        is_read: false,
        client_id: None,
        edited_at: None,
        version: 0,
        deleted: false,
        reactions: Vec::new(),
        pinned: false,
        reply_to: None,
        thread_root: None,
        thread: None,
        mentions: Vec::new(),
        attachments: Vec::new(),
    };
    let update = MessageUpdate {
        room: RoomId(2),
        seq: 4,
        user: UserId(3),
        created_at: Timestamp::parse("2026-02-24T10:32:00Z").expect("time"),
        message: Message {
            body: "hi!".to_owned(),
            edited_at: Some(Timestamp::parse("2026-02-24T10:32:00Z").expect("time")),
            version: 1,
            ..message.clone()
        },
    };
    let tombstone = MessageUpdate {
        seq: 5,
        message: Message {
            body: String::new(),
            version: 2,
            deleted: true,
            ..update.message.clone()
        },
        ..update.clone()
    };
    let server_frames = [
        ServerFrame::Message {
            message: message.clone(),
        },
        ServerFrame::Ack {
            client_id: Some("c-1".to_owned()),
            message: message.clone(),
        },
        ServerFrame::Subscribed {
            room: RoomId(2),
            last_seq: 0,
        },
        ServerFrame::Read {
            room: RoomId(2),
            user: UserId(3),
            seq: 1,
        },
        ServerFrame::Typing {
            room: RoomId(2),
            user: UserId(3),
        },
        ServerFrame::Presence {
            room: RoomId(2),
            user: UserId(3),
            status: PresenceStatus::Offline,
        },
        ServerFrame::Member(MemberEvent {
            room: RoomId(2),
            seq: 2,
            user: UserId(3),
            change: MemberChange::Left,
            created_at: Timestamp::parse("2026-02-24T10:31:00Z").expect("time"),
            by: None,
            reason: None,
            role: None,
            until: None,
        }),
        ServerFrame::Member(MemberEvent {
            room: RoomId(2),
            seq: 3,
            user: UserId(3),
            change: MemberChange::Banned,
            created_at: Timestamp::parse("2026-02-24T10:31:00Z").expect("time"),
            by: Some(UserId(1)),
            reason: Some("spam".to_owned()),
            role: None,
            until: Some(Timestamp::parse("2026-02-25T10:31:00Z").expect("time")),
        }),
        ServerFrame::Member(MemberEvent {
            room: RoomId(2),
            seq: 4,
            user: UserId(3),
            change: MemberChange::RoleChanged,
            created_at: Timestamp::parse("2026-02-24T10:31:00Z").expect("time"),
            by: Some(UserId(1)),
            reason: None,
            role: Some(Role::Admin),
            until: None,
        }),
        ServerFrame::MessageEdited(update.clone()),
        ServerFrame::MessageDeleted(tombstone),
        ServerFrame::RoomUpdated(RoomUpdate {
            room: RoomId(2),
            seq: 5,
            user: UserId(1),
            created_at: Timestamp::parse("2026-02-24T10:31:00Z").expect("time"),
            settings: RoomSettings {
                name: Some("hall".to_owned()),
                announcement: Some(true),
                ..RoomSettings::default()
            },
        }),
        ServerFrame::MessagePinned(MessageUpdate {
            seq: 7,
            message: Message {
                pinned: true,
                version: 2,
                ..update.message.clone()
            },
            ..update.clone()
        }),
        ServerFrame::MessageUnpinned(MessageUpdate {
            seq: 8,
            ..update.clone()
        }),
        ServerFrame::Reaction(ReactionEvent {
            room: RoomId(2),
            seq: 6,
            user: UserId(4),
            created_at: Timestamp::parse("2026-02-24T10:33:00Z").expect("time"),
            key: "👍".to_owned(),
            added: true,
            message: Message {
                version: 1,
                reactions: vec![Reaction {
                    key: "👍".to_owned(),
                    count: 1,
                    me: false,
                }],
                ..message.clone()
            },
        }),
        ServerFrame::RoomDeleted { room: RoomId(2) },
        ServerFrame::Pong,
        ServerFrame::Authenticated {
            expires_at: Timestamp::parse("2026-02-24T10:45:00Z").expect("time"),
        },
        ServerFrame::error(ErrorCode::RateLimited),
    ];
    for frame in &server_frames {
        validator.server(&serde_json::to_value(frame).expect("serializes"));
    }
    validator.not_server(&json!({"type": "presence", "room": 2, "user": 3, "status": "away"}));
    validator.not_server(&json!({"type": "subscribed", "room": 0, "last_seq": 0}));

    // A real conversation, every frame checked in both directions.
    let ann = s.user("ann").await;
    let bob = s.user("bob").await;
    let room = s.room(&ann, "lobby", "public", &[]).await;
    let mut a = s.ws("/ws/chat/lobby/", &ann).await;
    let mut b = s.ws("/ws/", &bob).await;
    let mut sent = Vec::new();
    let mut received = vec![a.expect("subscribed").await];

    let subscribe = json!({"type": "subscribe", "room": room});
    b.send(subscribe.clone()).await;
    sent.push(subscribe);
    received.push(b.expect("subscribed").await);
    // Bob learns Ann is here; Ann learns Bob arrived.
    received.push(b.expect("presence").await);
    received.push(a.expect("presence").await);

    let text = json!({"message": "hello"});
    a.send(text.clone()).await;
    sent.push(text);
    received.push(a.expect("ack").await);
    received.push(b.expect("message").await);

    let send = json!({"type": "send", "room": "lobby", "body": "hi", "client_id": "b-1"});
    b.send(send.clone()).await;
    sent.push(send);
    received.push(b.expect("ack").await);
    received.push(a.expect("message").await);

    let typing = json!({"type": "typing", "room": room});
    b.send(typing.clone()).await;
    sent.push(typing);
    received.push(a.expect("typing").await);

    // Seq 1 is bob's join, 2 ann's own message, 3 bob's.
    let read = json!({"type": "read", "room": room, "seq": 3});
    a.send(read.clone()).await;
    sent.push(read);
    received.push(b.expect("read").await);

    let empty = json!({"type": "send", "room": room, "body": "  "});
    b.send(empty.clone()).await;
    sent.push(empty);
    received.push(b.expect("error").await);
    b.send_text("{not json").await;
    received.push(b.expect("error").await);

    let ping = json!({"type": "ping"});
    b.send(ping.clone()).await;
    sent.push(ping);
    received.push(b.expect("pong").await);

    let auth = json!({"type": "auth", "token": bob.access});
    b.send(auth.clone()).await;
    sent.push(auth);
    received.push(b.expect("authenticated").await);

    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/rooms/{room}/"),
            Some(&ann.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    received.push(b.expect("room_deleted").await);
    // Bob's join reached ann's socket as a `member` frame.
    assert_eq!(a.members.len(), 1, "{:?}", a.members);
    received.append(&mut a.members);

    for frame in &sent {
        validator.client(frame);
    }
    for frame in &received {
        validator.server(frame);
    }
}

/// The served frame schema, compiled.
struct Validator {
    schemas: boon::Schemas,
    root: boon::SchemaIndex,
}

impl Validator {
    fn new(schema: Value) -> Self {
        let mut compiler = boon::Compiler::new();
        // Timestamps are `format: date-time`; check them too.
        compiler.enable_format_assertions();
        let mut schemas = boon::Schemas::new();
        let loc = "http://chat-rs.invalid/schema/ws/";
        compiler
            .add_resource(loc, schema)
            .expect("the frame schema loads");
        let root = compiler
            .compile(loc, &mut schemas)
            .unwrap_or_else(|e| panic!("the frame schema compiles: {e:#}"));
        Self { schemas, root }
    }

    fn check(&self, wrapped: &Value) -> Result<(), String> {
        self.schemas
            .validate(wrapped, self.root)
            .map_err(|e| format!("{e:#}"))
    }

    fn client(&self, frame: &Value) {
        if let Err(e) = self.check(&json!({"client": frame})) {
            panic!("client frame {frame} does not match the schema: {e}");
        }
    }

    fn not_client(&self, frame: &Value) {
        assert!(
            self.check(&json!({"client": frame})).is_err(),
            "the schema accepts the client frame {frame}"
        );
    }

    fn server(&self, frame: &Value) {
        if let Err(e) = self.check(&json!({"server": frame})) {
            panic!("server frame {frame} does not match the schema: {e}");
        }
    }

    fn not_server(&self, frame: &Value) {
        assert!(
            self.check(&json!({"server": frame})).is_err(),
            "the schema accepts the server frame {frame}"
        );
    }
}
