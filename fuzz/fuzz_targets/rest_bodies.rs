//! Every REST body and query the server reads as JSON: the first byte
//! picks the type, the rest is the document. A body that parses
//! serializes back to one that parses to the same value.
#![no_main]

use chat_core::{admin, api, conversation, moderation, push, server_api};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(json: &[u8]) {
    let _ = chat_core::text::json_has_nul(json);
    if let Ok(value) = serde_json::from_slice::<T>(json) {
        let again = serde_json::to_vec(&value).expect("a parsed body serializes");
        let reparsed: T = serde_json::from_slice(&again).expect("a serialized body parses");
        assert_eq!(value, reparsed);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    match which % 20 {
        0 => round_trip::<api::RegisterRequest>(json),
        1 => round_trip::<api::TokenRequest>(json),
        2 => round_trip::<api::RefreshRequest>(json),
        3 => round_trip::<api::CreateRoomRequest>(json),
        4 => round_trip::<api::JoinRoomRequest>(json),
        5 => round_trip::<api::InviteRequest>(json),
        6 => round_trip::<api::SendRequest>(json),
        7 => round_trip::<api::EditRequest>(json),
        8 => round_trip::<api::HistoryQuery>(json),
        9 => round_trip::<api::SearchQuery>(json),
        10 => round_trip::<conversation::CreateConversationRequest>(json),
        11 => round_trip::<moderation::ModerateRequest>(json),
        12 => round_trip::<moderation::RoomSettings>(json),
        13 => round_trip::<moderation::DirectoryQuery>(json),
        14 => round_trip::<admin::ReportRequest>(json),
        15 => round_trip::<admin::ResolveRequest>(json),
        16 => round_trip::<push::RegisterDeviceRequest>(json),
        17 => round_trip::<server_api::UpsertUserRequest>(json),
        18 => round_trip::<server_api::ServerSendRequest>(json),
        _ => round_trip::<server_api::SetMembersRequest>(json),
    }
});
