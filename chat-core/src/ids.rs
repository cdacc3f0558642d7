//! Typed ids. All are positive 64-bit integers on the wire; the newtypes keep a
//! room id from being passed where a user id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// The raw integer.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<i64> for $name {
            fn from(v: i64) -> Self {
                Self(v)
            }
        }
    };
}

id_type!(
    /// A user's id.
    UserId
);
id_type!(
    /// A room's id. Conversations are rooms too and share this id space.
    RoomId
);
id_type!(
    /// A message's id, unique across rooms.
    MessageId
);

/// A message's position in its room: 1, 2, 3… without gaps, in commit order.
/// `0` means "before the first message".
pub type Seq = i64;
