//! Schemas of fields that the derives cannot say on their own (feature
//! `schema`): named in `#[schema(schema_with = …)]`. Each states the rule
//! the server checks, so that the OpenAPI document refuses what the server
//! refuses and accepts what it accepts.

use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};

/// No control character (Unicode `Cc`, what Rust's `char::is_control`
/// finds), in any text the server checks that way.
pub(crate) const NO_CONTROL: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

/// A string enum, `null` allowed when `nullable` (an absent `Option`).
fn string_enum(values: &[&str], nullable: bool, description: &str) -> Object {
    let mut enum_values: Vec<serde_json::Value> = values.iter().map(|v| (*v).into()).collect();
    let schema_type = if nullable {
        enum_values.push(serde_json::Value::Null);
        SchemaType::Array(vec![Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .enum_values(Some(enum_values))
        .description(Some(description))
        .build()
}

/// `type` of a group room being created: `public`, `private` or `game`
/// (conversations are made by `POST /api/chats/conversations/create/`).
pub(crate) fn new_group_room_type() -> Object {
    string_enum(
        &["public", "private", "game"],
        true,
        "`public`, `private` or `game`",
    )
}

/// `type` of a room's settings: a public room can become private and back
/// (game rooms and conversations keep theirs).
pub(crate) fn settings_room_type() -> Object {
    string_enum(&["public", "private"], true, "`public` or `private`")
}

/// `status` of `GET /admin/reports/` (a query parameter: never `null`).
pub(crate) fn report_status() -> Object {
    string_enum(
        &["open", "resolved", "all"],
        false,
        "`open` (the default), `resolved` or `all`",
    )
}

/// External ids of the server API: 1 to 255 bytes (UTF-8) without control
/// characters.
pub(crate) fn external_id() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(NO_CONTROL))
        .description(Some(
            "A user's id in the host: 1 to 255 bytes (UTF-8) without control characters",
        ))
}

/// A list of external ids.
pub(crate) fn external_ids() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new().items(external_id()).build()
}
