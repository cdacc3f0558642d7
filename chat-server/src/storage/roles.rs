//! Who may do what to whom in a room: the one rule, judged by every
//! backend on the rows as they stand under the room's lock (so that two
//! moderators racing each other, or a kick racing a promotion, are judged
//! one after the other), and by the service for what it checks before.
//!
//! Ranks are `member < admin < owner` ([`Role`]). The owner is whoever
//! `rooms.owner_id` names (the creator until handed over); an admin is a
//! member whose row says so. Moderating someone needs a rank above
//! theirs, so an admin acts on members only and nobody acts on the owner;
//! naming admins and handing the room over are the owner's. Conversations
//! have no roles and take no moderation. The table is in ARCHITECTURE.md
//! ("Roles").

use chat_core::Timestamp;
use chat_core::UserId;
use chat_core::moderation::Role;
use chat_core::room::RoomType;
use chat_core::timeline::MemberChange;

use super::{MemberState, Refusal, StorageError};

/// The end stored for a mute without end: 9999-12-31T23:59:59Z, the last
/// second a timestamp holds.
pub(crate) const MUTED_FOR_GOOD: i64 = 253_402_300_799_000_000;

/// The refusal of a send by a member muted until `until`.
pub(crate) fn muted(until: i64) -> Refusal {
    Refusal::Muted {
        until: (until != MUTED_FOR_GOOD).then(|| Timestamp::from_unix_micros(until)),
    }
}

/// A member's role from its row and the room's owner.
pub(crate) fn role_of(owner: UserId, user: UserId, stored: Role) -> Role {
    if user == owner { Role::Owner } else { stored }
}

/// Whether `role` moderates a room of `kind`: deletes others' messages,
/// pins, changes settings. In a conversation nobody does.
pub(crate) fn moderates(kind: RoomType, role: Role) -> bool {
    kind != RoomType::Direct && role >= Role::Admin
}

/// Someone's place in a room, as the rule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) state: MemberState,
    pub(crate) role: Role,
}

/// What the rule reads of a room under its lock for a membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) kind: RoomType,
    /// Whoever makes the change (for a join or a leave, the user).
    pub(crate) actor: Option<Place>,
    /// Whom it is for.
    pub(crate) target: Option<Place>,
    /// The target's ban row, if any: its end (`None`: for good).
    pub(crate) banned: Option<Option<i64>>,
    /// The target's mute row, if any: its end (microseconds).
    pub(crate) muted: Option<i64>,
}

/// What a membership change writes, once the rule allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// The target becomes a member (from invited or from nothing).
    Join,
    /// The target's row goes (a member or an invitation).
    Remove,
    /// The target becomes invited.
    Invite,
    /// The target's row goes, if any, and the ban row is written.
    Ban,
    /// The ban row goes.
    Unban,
    /// The mute row is written with this end, or goes (`None`).
    Mute(Option<i64>),
    /// The target's stored role becomes this.
    SetRole(Role),
    /// The target owns the room; the actor, the old owner, becomes an
    /// admin.
    Transfer,
}

/// A membership change to judge: `change` of `user`'s membership, made by
/// `by` (`None`: the user themself, a join or a leave).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request<'a> {
    pub(crate) user: UserId,
    pub(crate) by: Option<UserId>,
    pub(crate) change: MemberChange,
    pub(crate) role: Option<Role>,
    pub(crate) until: Option<&'a Timestamp>,
    pub(crate) at: Timestamp,
}

fn refused(why: Refusal) -> Result<Option<Effect>, StorageError> {
    Err(StorageError::Refused(why))
}

/// The rule: what `request` does in a room that stands as `standing`
/// says (`None`: nothing changes, and no event is appended), or why it is
/// refused.
pub(crate) fn judge(
    request: &Request<'_>,
    standing: &Standing,
) -> Result<Option<Effect>, StorageError> {
    let at = request.at.unix_micros();
    let banned = standing
        .banned
        .is_some_and(|until| until.is_none_or(|u| u > at));
    let target = standing.target;
    let not_member = || StorageError::NotMember {
        kind: standing.kind,
        state: standing.actor.map(|a| a.state),
    };
    if request.by.is_none_or(|by| by == request.user) {
        return match request.change {
            MemberChange::Joined if target.is_some_and(|t| t.state == MemberState::Member) => {
                Ok(None)
            }
            MemberChange::Joined if banned => refused(Refusal::Banned),
            MemberChange::Joined => Ok(Some(Effect::Join)),
            MemberChange::Left if target.is_none() => Ok(None),
            MemberChange::Left => Ok(Some(Effect::Remove)),
            // Inviting oneself: already in, or a stranger.
            MemberChange::Invited if target.is_some() => Ok(None),
            MemberChange::Invited => Err(not_member()),
            // Nobody moderates themself.
            _ => refused(Refusal::SelfAction),
        };
    }
    let actor = match standing.actor {
        Some(actor) if actor.state == MemberState::Member => actor.role,
        _ => return Err(not_member()),
    };
    if request.change == MemberChange::Invited {
        // Any member invites, into a group room.
        return match target {
            _ if standing.kind == RoomType::Direct => refused(Refusal::Conversation),
            Some(_) => Ok(None),
            None if banned => refused(Refusal::Banned),
            None => Ok(Some(Effect::Invite)),
        };
    }
    if standing.kind == RoomType::Direct {
        return refused(Refusal::Conversation);
    }
    if actor < Role::Admin {
        return refused(Refusal::NotModerator);
    }
    let member = target.filter(|t| t.state == MemberState::Member);
    if target.is_some_and(|t| t.role >= actor) {
        return refused(Refusal::InsufficientRole);
    }
    match request.change {
        MemberChange::Kicked if target.is_none() => refused(Refusal::NotInRoom),
        MemberChange::Kicked => Ok(Some(Effect::Remove)),
        MemberChange::Banned => Ok(Some(Effect::Ban)),
        MemberChange::Unbanned if standing.banned.is_none() => Ok(None),
        MemberChange::Unbanned => Ok(Some(Effect::Unban)),
        MemberChange::Muted if member.is_none() => refused(Refusal::NotInRoom),
        MemberChange::Muted => {
            let until = request.until.map_or(MUTED_FOR_GOOD, |t| t.unix_micros());
            Ok(Some(Effect::Mute(Some(until))))
        }
        // A mute outlives leaving (and a kick): it can be lifted from
        // someone who is out.
        MemberChange::Unmuted => match standing.muted {
            Some(until) if until > at => Ok(Some(Effect::Mute(None))),
            _ => Ok(None),
        },
        MemberChange::RoleChanged => {
            if actor != Role::Owner {
                return refused(Refusal::InsufficientRole);
            }
            let Some(member) = member else {
                return refused(Refusal::NotInRoom);
            };
            match request.role {
                Some(Role::Owner) => Ok(Some(Effect::Transfer)),
                Some(role) if role == member.role => Ok(None),
                Some(role) => Ok(Some(Effect::SetRole(role))),
                // The service asks for a role; without one nothing changes.
                None => Ok(None),
            }
        }
        MemberChange::Joined | MemberChange::Left | MemberChange::Invited => {
            refused(Refusal::SelfAction)
        }
    }
}

/// What an append reads of its sender and room, beside the membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gate {
    pub(crate) kind: RoomType,
    pub(crate) role: Role,
    /// The sender's mute row's end, if any (microseconds).
    pub(crate) muted_until: Option<i64>,
    pub(crate) announcement: bool,
    /// Seconds; 0 for off.
    pub(crate) slow_mode: i64,
    /// The sender's last message in the room (microseconds).
    pub(crate) last_sent_at: Option<i64>,
    /// In a conversation: the other participant blocked the sender.
    pub(crate) blocked: bool,
}

/// The rule of sending, for a member, at `at` (microseconds): a block by
/// the other participant of a conversation, a mute in
/// force, an announcement room (admins and the owner post), slow mode
/// (admins and the owner excepted; one message per member every
/// `slow_mode` seconds). Checked after a repeated `client_id` is answered:
/// a retry of a stored message gets its original, whatever changed since.
pub(crate) fn send_refusal(gate: &Gate, at: i64) -> Option<Refusal> {
    if gate.blocked {
        return Some(Refusal::Blocked);
    }
    if let Some(until) = gate.muted_until.filter(|until| *until > at) {
        return Some(muted(until));
    }
    let group = gate.kind != RoomType::Direct;
    if group && gate.announcement && gate.role < Role::Admin {
        return Some(Refusal::AnnouncementOnly);
    }
    if group && gate.slow_mode > 0 && gate.role < Role::Admin {
        let next = gate
            .last_sent_at
            .map(|last| last.saturating_add(gate.slow_mode.saturating_mul(1_000_000)));
        if let Some(next) = next.filter(|next| *next > at) {
            return Some(Refusal::SlowMode {
                until: Timestamp::from_unix_micros(next),
            });
        }
    }
    None
}

/// The rule of a change to a room's settings, made by someone standing as
/// `actor` in a room of `kind`.
pub(crate) fn judge_settings(kind: RoomType, actor: Option<Place>) -> Result<(), StorageError> {
    match actor {
        Some(actor) if actor.state == MemberState::Member => {
            if kind == RoomType::Direct {
                Err(StorageError::Refused(Refusal::Conversation))
            } else if moderates(kind, actor.role) {
                Ok(())
            } else {
                Err(StorageError::Refused(Refusal::NotModerator))
            }
        }
        other => Err(StorageError::NotMember {
            kind,
            state: other.map(|a| a.state),
        }),
    }
}
