//! Group commit for appends: concurrent appends share one transaction, so
//! one commit (one fsync) makes a whole batch durable instead of each
//! message paying for its own.
//!
//! The committer runs on a thread of its own, with a single-threaded
//! runtime, not as a task of the server's runtime. A batch takes several
//! round trips to the database (statements, commit); on the server's
//! runtime, under load, each would wait behind every socket task queued
//! there before the committer could send the next, and a message's way to
//! storage would grow with the fan-out it has to wait for. On its own
//! thread the operating system runs the committer as soon as an answer
//! arrives. (W2 on SQLite, `benches/`.)
//!
//! One committer per storage takes the appends in arrival order. While
//! a batch commits, new appends queue; the next batch takes all of them (up
//! to [`MAX_BATCH`]). A lone append goes alone, at once, so a quiet server
//! adds no latency. Every caller still hears back only after its message
//! committed: durability is unchanged, only the fsyncs are shared.
//!
//! The committer also publishes: right after a batch commits, and before
//! any of its callers is answered, it hands each new message to the
//! storage's [`CommitListener`] in commit order (the hub, which queues it
//! on every local socket of the room). Publishing from the one place that
//! knows the order means nothing downstream has to restore it.
//!
//! The batch rule is written here once for every SQL backend; a backend
//! only supplies the statements that store a batch (`store_batch`). A
//! message that repeats the `(sender, client_id)` of one earlier in the
//! batch is answered with that one and never reaches the database; a pair
//! stored before is answered with its original, by the backend's lookup
//! (SQLite) or by the one-by-one appends after the batch failed on it
//! (PostgreSQL). Either way the batch answers exactly what one append after
//! the other would.
//!
//! A batch is all or nothing. When it fails for a reason that may belong to
//! one message alone (a pair inserted meanwhile by another instance, an
//! unknown sender, a deadlock), it rolls back and each of its appends runs
//! again on its own, so one bad message never costs the others theirs.
//! When the database is unreachable every append of the batch hears so at
//! once.
//!
//! Every other change to a room's timeline (a membership change, an edit, a
//! deletion: [`Op`]) goes through the same queue, runs in a transaction of
//! its own and is published the same way.
//!
//! Work on a room runs in the order it arrived, and never beside other
//! work on that room; work on other rooms may run beside it ([`Lanes`]):
//! on PostgreSQL an op runs on a connection of its own while the batch
//! commits ([`BatchAppend::lanes`]), so that its round trips do not hold
//! up every message of the instance; SQLite, one writer, runs one thing at
//! a time. Only one batch is in flight: the appends queued meanwhile make
//! the next. Since each room's work is serialized, each room's events are
//! still published in seq order; rooms' events interleave as they commit.
//!
//! A batch that commits may leave some messages unsettled: a room the
//! backend could not be sure of (`Stored::Retry`: PostgreSQL, a room another
//! instance moved while the batch waited for it), or a repeat of a message
//! the batch refused. They are committed again after it, as a batch of their
//! own, and published after it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use chat_core::room::RoomType;
use chat_core::{MessageId, RoomId, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{
    Appended, Changed, CommitListener, Committed, Listener, MemberState, MemberUpdate,
    MessageChange, NewMessage, Refusal, RoomChange, StorageError, StoredMember, StoredMessage,
    StoredRoomUpdate, UpdateKind,
};

/// The most appends one transaction takes. Bounds the statement's size and
/// the time any one caller waits for the others.
pub(crate) const MAX_BATCH: usize = 256;

/// Appends queued before callers wait for room in the queue.
const QUEUE: usize = 4 * MAX_BATCH;

/// What a backend provides for group commit.
#[async_trait]
pub(crate) trait BatchAppend: Send + Sync + 'static {
    /// Runs once before the first append: open what appends will need.
    async fn warm_up(&self) {}

    /// One append in its own transaction: the reference behaviour
    /// (`sql/append.rs`).
    async fn append_one(&self, message: NewMessage) -> Result<Appended, StorageError>;

    /// Stores `fresh` in one transaction, no two with the same `(sender,
    /// client_id)`, and says of each, in order, what became of it: the
    /// messages are numbered per room in their order, above the room's
    /// `last_seq`, inserted, and their senders' read marks advanced; a pair
    /// already stored is either answered with its original (taking no seq:
    /// SQLite looks them up first) or fails the batch (PostgreSQL's one
    /// statement), after which group commit appends one by one and the
    /// single append answers it. `Err`: the transaction rolled back and
    /// nothing was stored.
    async fn store_batch(&self, fresh: &[&NewMessage]) -> Result<Vec<Stored>, StorageError>;

    /// Applies `op` and appends its event in one transaction (`sql/`).
    async fn apply(&self, op: &Op) -> Result<Applied, StorageError>;

    /// Whether [`BatchAppend::store_batch_with`] writes changes judged
    /// before they were queued in the batch's own transaction.
    fn batches_changes(&self) -> bool {
        false
    }

    /// [`BatchAppend::store_batch`] with `changes` at their places among
    /// the messages, in the same transaction. A change comes back `None`
    /// when it was not written (its room moved, or had another event than
    /// a message since it was judged), and its room's messages then answer
    /// `Retry`: nothing of that room is stored.
    async fn store_batch_with(
        &self,
        fresh: &[&NewMessage],
        changes: &[Placed<'_>],
    ) -> Result<(Vec<Stored>, Vec<Option<Changed>>), StorageError> {
        if !changes.is_empty() {
            return Err(StorageError::Backend(
                "this backend writes no change in a batch".into(),
            ));
        }
        Ok((self.store_batch(fresh).await?, Vec::new()))
    }

    /// How many batches and ops may be in flight at once, each on rooms
    /// the others do not touch: 1 for a single-writer database.
    fn lanes(&self) -> usize {
        1
    }
}

/// What became of one message of a batch.
// Some outcomes only one backend's batch gives.
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
#[derive(Debug)]
pub(crate) enum Stored {
    /// Inserted by this batch.
    New(StoredMessage),
    /// Its `(sender, client_id)` was stored before: the original.
    Original(StoredMessage),
    /// Its room is gone.
    NoRoom,
    /// Its sender is not a member of the room (see
    /// [`StorageError::NotMember`]).
    NotMember {
        kind: RoomType,
        state: Option<MemberState>,
    },
    /// A member the room refuses to hear from (muted, slow mode, an
    /// announcement room).
    Refused(Refusal),
    /// Not stored: for the single append to settle (a refused repeat of a
    /// stored message, whose original it answers). Its room's other
    /// messages are settled.
    Alone,
    /// Not stored: the backend could not be sure of the room's state (its
    /// timeline moved while the batch waited for it). Every message of that
    /// room in the batch says so, and group commit commits them again.
    Retry,
}

type Reply = oneshot::Sender<Result<Appended, StorageError>>;
type ApplyReply = oneshot::Sender<Result<Applied, StorageError>>;

/// A change other than a new message: it runs alone, between the batches
/// before and after it, and appends one timeline event (or none, if it
/// changed nothing). A new kind of room event is one more variant here.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// A membership change, applied in order with the appends around it.
    Member(MemberUpdate),
    /// A change to a room's settings.
    Room(RoomChange),
    /// A change to a message, with what the backend judged of it before
    /// queueing it, if anything.
    Message(MessageChange, Option<Box<Judgement>>),
}

/// A change to a message judged on a read made before it was queued
/// (PostgreSQL, `postgres/change.rs`): the backend writes it at once if
/// the room's events other than messages are still `events` in number
/// (nothing the rule read has changed), and judges it again otherwise.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
#[derive(Debug, Clone)]
pub struct Judgement {
    pub(crate) target: StoredMessage,
    pub(crate) kind: UpdateKind,
    pub(crate) events: i64,
}

/// A change to a message written in a batch: after `before` of the
/// batch's messages, with the judgement it was queued with.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed<'a> {
    pub(crate) before: usize,
    pub(crate) change: &'a MessageChange,
    pub(crate) judged: &'a Judgement,
}

/// What applying an [`Op`] did.
#[derive(Debug)]
pub(crate) enum Applied {
    /// The membership change's event; `None` if nothing changed.
    Member(Option<StoredMember>),
    Message(Box<Changed>),
    /// The settings change's event; `None` if nothing changed.
    Room(Option<StoredRoomUpdate>),
}

impl Applied {
    /// The event to publish, if the op appended one.
    fn committed(&self) -> Option<Committed<'_>> {
        match self {
            Self::Member(event) => event.as_ref().map(Committed::Member),
            Self::Message(changed) => changed.event.as_ref().map(Committed::Update),
            Self::Room(event) => event.as_ref().map(Committed::Room),
        }
    }
}

/// What the committer's queue carries, in arrival order.
#[derive(Debug)]
enum Work {
    Append(NewMessage, Reply),
    Apply(Op, ApplyReply),
}

/// The handle appends go through; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Work>,
    listener: Listener,
}

impl GroupCommit {
    /// Starts the committer on a thread of its own, with the backend that
    /// `make` builds there (so that a connection pool it opens belongs to
    /// that thread's runtime). It ends when the last handle is dropped,
    /// after answering what was queued. If the thread or its runtime cannot
    /// start, every append answers `Unavailable` (the committer is gone).
    pub(crate) fn start<B, F>(make: F) -> Self
    where
        B: BatchAppend,
        F: FnOnce() -> B + Send + 'static,
    {
        let (queue, appends) = mpsc::channel(QUEUE);
        let listener = Listener::default();
        let told = listener.clone();
        let started = std::thread::Builder::new()
            .name("chat-append".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(async move {
                        commit_loop(Arc::new(make()), appends, told).await;
                    }),
                    Err(e) => tracing::error!(error = %e, "no runtime for the append committer"),
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "no thread for the append committer");
        }
        Self { queue, listener }
    }

    /// Who hears of each commit, on the committer's thread.
    pub(crate) fn listen(&self, listener: Arc<dyn CommitListener>) {
        self.listener.set(listener);
    }

    /// Appends `message`, returning once it is committed (or refused).
    pub(crate) async fn append(&self, message: NewMessage) -> Result<Appended, StorageError> {
        self.append_many(vec![message])
            .await
            .pop()
            .unwrap_or_else(|| Err(gone()))
    }

    /// Queues `messages` in their order, then waits for each: one caller's
    /// messages to a room are committed in the order given, in one batch or
    /// adjacent ones, and never wait for each other's commits.
    pub(crate) async fn append_many(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<Result<Appended, StorageError>> {
        let started = std::time::Instant::now();
        let mut answers = Vec::with_capacity(messages.len());
        for message in messages {
            let (reply, answer) = oneshot::channel();
            // A closed queue drops the reply, and the answer says so below.
            let _ = self.queue.send(Work::Append(message, reply)).await;
            answers.push(answer);
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(answer.await.unwrap_or_else(|_| Err(gone())));
            metrics::histogram!(crate::metrics::APPEND_DURATION)
                .record(started.elapsed().as_secs_f64());
        }
        results
    }
}

impl GroupCommit {
    /// Applies a membership change and its timeline event; `None` if
    /// nothing changed.
    pub(crate) async fn change_membership(
        &self,
        op: MemberUpdate,
    ) -> Result<Option<StoredMember>, StorageError> {
        match self.apply(Op::Member(op)).await? {
            Applied::Member(event) => Ok(event),
            Applied::Room(_) => Err(mismatch()),
            Applied::Message(_) => Err(mismatch()),
        }
    }

    /// Changes a message and appends the change's event.
    pub(crate) async fn change_message(
        &self,
        change: MessageChange,
        judged: Option<Box<Judgement>>,
    ) -> Result<Changed, StorageError> {
        match self.apply(Op::Message(change, judged)).await? {
            Applied::Message(changed) => Ok(*changed),
            Applied::Member(_) | Applied::Room(_) => Err(mismatch()),
        }
    }

    /// Changes a room's settings and appends the change's event.
    pub(crate) async fn change_room(
        &self,
        change: RoomChange,
    ) -> Result<Option<StoredRoomUpdate>, StorageError> {
        match self.apply(Op::Room(change)).await? {
            Applied::Room(event) => Ok(event),
            Applied::Member(_) | Applied::Message(_) => Err(mismatch()),
        }
    }

    async fn apply(&self, op: Op) -> Result<Applied, StorageError> {
        let (reply, answer) = oneshot::channel();
        let _ = self.queue.send(Work::Apply(op, reply)).await;
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

fn mismatch() -> StorageError {
    StorageError::Backend("the committer answered another kind of change".into())
}

/// The committer task is gone: its runtime shut down under it.
fn gone() -> StorageError {
    StorageError::Unavailable("the append committer has stopped".into())
}

async fn commit_loop<B: BatchAppend>(
    backend: Arc<B>,
    mut queue: mpsc::Receiver<Work>,
    listener: Listener,
) {
    backend.warm_up().await;
    let lanes = backend.lanes().max(1);
    let mut lane = Lanes {
        changes_in_batch: backend.batches_changes(),
        ..Lanes::default()
    };
    let mut pending: VecDeque<Work> = VecDeque::new();
    let mut running: JoinSet<Started> = JoinSet::new();
    let mut received = Vec::with_capacity(MAX_BATCH);
    let mut open = true;
    loop {
        for unit in lane.schedule(&mut pending, lanes - running.len()) {
            let (backend, listener) = (backend.clone(), listener.clone());
            running.spawn(async move {
                let started = unit.started();
                unit.run(&*backend, &listener).await;
                started
            });
        }
        if running.is_empty() && !open && pending.is_empty() {
            return;
        }
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => match done {
                Ok(started) => lane.release(&started),
                // A unit that panicked: its rooms stay taken, and what
                // waits on them waits; a bug to see in the logs, not to
                // hide.
                Err(e) => tracing::error!(error = %e, "a commit unit failed"),
            },
            n = queue.recv_many(&mut received, MAX_BATCH), if open => {
                if n == 0 {
                    open = false;
                }
                pending.extend(received.drain(..));
            }
        }
    }
}

/// The rooms work in flight holds: work on a room waits for the work on
/// it before (arrival order per room); ops on other rooms run beside it,
/// up to the backend's [`BatchAppend::lanes`]. One batch at a time: appends
/// queued while it commits make the next one, and a batch per lane would
/// split them into more, smaller commits (W5 on PostgreSQL fell from
/// 378,713 to 168,508 deliveries/s with four). But the messages that
/// queued behind an op go as soon as it is done, as a batch of their own
/// beside the one in flight: otherwise a change made its room's messages
/// wait for it, then for a whole batch they were not in, then for their
/// own (W1C on PostgreSQL).
///
/// Where the backend writes changes in a batch ([`BatchAppend::batches_changes`]),
/// a change to a message judged before it was queued (not a deletion,
/// which writes rows messages also write) goes in the batch at its place
/// among its room's messages: one commit, no lane of its own, and the
/// room's messages behind it in the same statement. One per room and
/// batch (a second one's judgement would be stale behind the first), and
/// never beside a message of the batch that updates or reads the same row
/// after it (a reply in its thread, a reply quoting it): the statement
/// sees one snapshot, and updates a row once.
#[derive(Debug, Default)]
struct Lanes {
    /// Changes judged ahead go in batches.
    changes_in_batch: bool,
    busy: HashSet<RoomId>,
    /// Work of unknown room in flight: nothing else runs.
    barrier: bool,
    /// The batch in flight, if any (not counting batches behind an op).
    batch: bool,
    /// Rooms an op has just released: their queued appends may go beside
    /// the batch in flight. Cleared by the next schedule.
    after_op: HashSet<RoomId>,
}

/// What a started unit holds until it is done.
#[derive(Debug)]
struct Started {
    rooms: Vec<RoomId>,
    barrier: bool,
    /// It is the batch in flight.
    batch: bool,
    /// It is an op: its room's appends may go beside the batch after it.
    op: bool,
}

/// Work started together: a batch (`true`: the batch in flight; `false`:
/// messages behind an op), or one op.
enum Unit {
    Batch(Vec<Item>, bool),
    Apply(Op, ApplyReply),
}

/// What a batch holds, in arrival order: messages, and changes judged
/// before they were queued.
enum Item {
    Append(NewMessage, Reply),
    Change(MessageChange, Box<Judgement>, ApplyReply),
}

impl Item {
    fn room(&self) -> Option<RoomId> {
        match self {
            Self::Append(message, _) => Some(message.room),
            Self::Change(change, judged, _) => change_room(change, Some(judged)),
        }
    }
}

/// Whether a change may be written in a batch: not a deletion, which
/// writes rows that messages write too (read marks, replies' snippets).
fn batchable(change: &MessageChange) -> bool {
    !matches!(change.op, super::ChangeOp::Delete)
}

impl Lanes {
    /// Takes from `pending`, in arrival order, what may start now on at
    /// most `free` lanes: the appends to rooms nothing holds, as one batch
    /// (one lane; while a batch is in flight, only those to rooms an op has
    /// just released), and ops on rooms nothing holds (a lane each).
    /// Whatever stays waits, and so does everything after it on its room.
    /// An op of unknown room starts only alone, first in line with nothing
    /// in flight, and holds everything.
    fn schedule(&mut self, pending: &mut VecDeque<Work>, free: usize) -> Vec<Unit> {
        let after_op = std::mem::take(&mut self.after_op);
        let mut units = Vec::new();
        if free == 0 || self.barrier || pending.is_empty() {
            return units;
        }
        let mut lanes_left = free;
        let mut batch: Vec<Item> = Vec::new();
        let mut batch_rooms: Vec<RoomId> = Vec::new();
        // Of the batch's changes: their rooms and messages; of its
        // messages: the thread roots they update.
        let mut changed_rooms: HashSet<RoomId> = HashSet::new();
        let mut targets: HashSet<MessageId> = HashSet::new();
        let mut roots: HashSet<MessageId> = HashSet::new();
        let mut waiting: HashSet<RoomId> = HashSet::new();
        let mut kept = VecDeque::with_capacity(pending.len());
        let mut closed = false;
        let nothing_running = self.busy.is_empty();
        for work in pending.drain(..) {
            if closed {
                kept.push_back(work);
                continue;
            }
            let Some(room) = work.room() else {
                // Unknown room: alone, or not yet.
                if nothing_running && units.is_empty() && batch.is_empty() && kept.is_empty() {
                    if let Work::Apply(op, reply) = work {
                        self.barrier = true;
                        units.push(Unit::Apply(op, reply));
                    }
                } else {
                    kept.push_back(work);
                }
                closed = true;
                continue;
            };
            let free_room = !self.busy.contains(&room) && !waiting.contains(&room);
            let joins = free_room
                && (!self.batch || after_op.contains(&room))
                && batch.len() < MAX_BATCH
                && (!batch.is_empty() || lanes_left > 0);
            let item = match work {
                Work::Append(message, reply)
                    if joins
                        && ![message.thread_root, message.reply_to]
                            .iter()
                            .flatten()
                            .any(|m| targets.contains(m)) =>
                {
                    roots.extend(message.thread_root);
                    Item::Append(message, reply)
                }
                Work::Apply(Op::Message(change, Some(judged)), reply)
                    if self.changes_in_batch && batchable(&change) =>
                {
                    if joins
                        && !changed_rooms.contains(&room)
                        && !roots.contains(&change.message)
                        && !targets.contains(&change.message)
                    {
                        changed_rooms.insert(room);
                        targets.insert(change.message);
                        Item::Change(change, judged, reply)
                    } else {
                        waiting.insert(room);
                        kept.push_back(Work::Apply(Op::Message(change, Some(judged)), reply));
                        continue;
                    }
                }
                Work::Apply(op, reply)
                    if free_room && !batch_rooms.contains(&room) && lanes_left > 0 =>
                {
                    lanes_left -= 1;
                    waiting.insert(room);
                    self.busy.insert(room);
                    units.push(Unit::Apply(op, reply));
                    continue;
                }
                other => {
                    waiting.insert(room);
                    kept.push_back(other);
                    continue;
                }
            };
            if batch.is_empty() {
                lanes_left -= 1;
            }
            if !batch_rooms.contains(&room) {
                batch_rooms.push(room);
            }
            batch.push(item);
        }
        *pending = kept;
        if !batch.is_empty() {
            self.busy.extend(batch_rooms.iter().copied());
            let main = !self.batch;
            self.batch = true;
            units.push(Unit::Batch(batch, main));
        }
        units
    }

    fn release(&mut self, started: &Started) {
        for room in &started.rooms {
            self.busy.remove(room);
        }
        if started.barrier {
            self.barrier = false;
        }
        if started.batch {
            self.batch = false;
        }
        if started.op {
            self.after_op.extend(started.rooms.iter().copied());
        }
    }
}

impl Work {
    /// The room it changes; `None` when not known before it runs.
    fn room(&self) -> Option<RoomId> {
        match self {
            Self::Append(message, _) => Some(message.room),
            Self::Apply(Op::Member(op), _) => Some(op.room),
            Self::Apply(Op::Room(change), _) => Some(change.room),
            Self::Apply(Op::Message(change, judged), _) => change_room(change, judged.as_deref()),
        }
    }
}

/// A change's room: as the caller named it, or as its judgement read it
/// (messages never move).
fn change_room(change: &MessageChange, judged: Option<&Judgement>) -> Option<RoomId> {
    change.room.or_else(|| judged.map(|j| j.target.room))
}

impl Unit {
    fn started(&self) -> Started {
        match self {
            Self::Batch(run, main) => {
                let mut rooms: Vec<RoomId> = run.iter().filter_map(Item::room).collect();
                rooms.sort_unstable();
                rooms.dedup();
                Started {
                    rooms,
                    barrier: false,
                    batch: *main,
                    op: false,
                }
            }
            Self::Apply(op, _) => {
                let room = match op {
                    Op::Member(op) => Some(op.room),
                    Op::Room(change) => Some(change.room),
                    Op::Message(change, judged) => change_room(change, judged.as_deref()),
                };
                Started {
                    rooms: room.into_iter().collect(),
                    barrier: room.is_none(),
                    batch: false,
                    op: true,
                }
            }
        }
    }

    /// Commits, publishes, answers.
    async fn run<B: BatchAppend>(self, backend: &B, listener: &Listener) {
        match self {
            Self::Batch(run, _) => append_run(backend, run, listener).await,
            Self::Apply(op, reply) => {
                let result = backend.apply(&op).await;
                if let Some(event) = result.as_ref().ok().and_then(Applied::committed) {
                    // No origin: every socket of the room hears of a
                    // change, the one that asked for it included.
                    listener.committed(event, None);
                }
                let _ = reply.send(result);
            }
        }
    }
}

/// Commits a batch, publishes it, then answers.
async fn append_run<B: BatchAppend>(backend: &B, run: Vec<Item>, listener: &Listener) {
    if run.is_empty() {
        return;
    }
    let mut entries = Vec::with_capacity(run.len());
    let mut replies = Vec::with_capacity(run.len());
    for item in run {
        match item {
            Item::Append(message, reply) => {
                entries.push(Entry::Message(message));
                replies.push(Answer::Message(reply));
            }
            Item::Change(change, judged, reply) => {
                entries.push(Entry::Change(change, judged));
                replies.push(Answer::Change(reply));
            }
        }
    }
    let messages = entries
        .iter()
        .filter(|e| matches!(e, Entry::Message(_)))
        .count();
    metrics::histogram!(crate::metrics::APPEND_BATCH_SIZE).record(messages as f64);
    let origins: Vec<_> = entries
        .iter()
        .map(|e| match e {
            Entry::Message(m) => m.origin,
            Entry::Change(..) => None,
        })
        .collect();
    let Outcome { results, late } = commit(backend, entries, RETRIES).await;
    // The whole batch is published before anyone is answered: a sender
    // that hears back knows every socket of this instance has its message
    // queued, in seq order after everything committed before. What was
    // appended after the batch comes after it, as its seqs do.
    let on_time = (0..results.len()).filter(|slot| !late.contains(slot));
    for slot in on_time.chain(late.iter().copied()) {
        match (results.get(slot), origins.get(slot)) {
            (Some(Done::Message(Ok(appended))), Some(origin)) => {
                listener.appended(appended, *origin);
            }
            // No origin: every socket of the room hears of a change, the
            // one that asked for it included.
            (Some(Done::Change(Ok(applied))), _) => {
                if let Some(event) = applied.committed() {
                    listener.committed(event, None);
                }
            }
            _ => {}
        }
    }
    for (reply, result) in replies.into_iter().zip(results) {
        // A caller that stopped waiting still has its message stored.
        match (reply, result) {
            (Answer::Message(reply), Done::Message(result)) => {
                let _ = reply.send(result);
            }
            (Answer::Change(reply), Done::Change(result)) => {
                let _ = reply.send(result);
            }
            (Answer::Message(reply), Done::Change(_)) => {
                let _ = reply.send(Err(mismatch()));
            }
            (Answer::Change(reply), Done::Message(_)) => {
                let _ = reply.send(Err(mismatch()));
            }
        }
    }
}

/// One thing a batch commits, kept for a retry.
#[derive(Debug, Clone)]
enum Entry {
    Message(NewMessage),
    Change(MessageChange, Box<Judgement>),
}

/// What became of an [`Entry`]. (Sized as the message's answer: a batch
/// holds mostly messages.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Done {
    Message(Result<Appended, StorageError>),
    Change(Result<Applied, StorageError>),
}

impl Entry {
    /// `error` as this entry's answer.
    fn failed(&self, error: StorageError) -> Done {
        match self {
            Self::Message(_) => Done::Message(Err(error)),
            Self::Change(..) => Done::Change(Err(error)),
        }
    }
}

/// Where an entry's answer goes.
enum Answer {
    Message(Reply),
    Change(ApplyReply),
}

/// Where a batch's entry gets its answer.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// From what the store said of `fresh[k]`.
    Fresh(usize),
    /// A repeat of `fresh[k]`'s `(sender, client_id)` earlier in the batch:
    /// answered with that message, as it would be one by one.
    RepeatOf(usize),
    /// From what the store said of the `k`th change.
    Change(usize),
}

/// Batches a run of messages may go through before the ones still
/// unsettled are appended one by one.
const RETRIES: u32 = 2;

/// What committing a run came to: an answer per entry, in order, and the
/// entries committed again after the batch (`late`, in order), whose seqs
/// come after all of the batch's.
struct Outcome {
    results: Vec<Done>,
    late: Vec<usize>,
}

/// Commits `entries` as one batch, or one by one if the batch fails for a
/// reason that may be one message's. A lone message goes as a batch of one
/// too: the batch takes fewer statements than the single append, which is
/// kept for what a batch cannot answer.
async fn commit<B: BatchAppend>(backend: &B, entries: Vec<Entry>, retries: u32) -> Outcome {
    let mut first: HashMap<(UserId, &str), usize> = HashMap::new();
    let mut slots = Vec::with_capacity(entries.len());
    let mut fresh: Vec<&NewMessage> = Vec::with_capacity(entries.len());
    let mut placed: Vec<Placed<'_>> = Vec::new();
    for entry in &entries {
        let m = match entry {
            Entry::Message(m) => m,
            Entry::Change(change, judged) => {
                slots.push(Slot::Change(placed.len()));
                placed.push(Placed {
                    before: fresh.len(),
                    change,
                    judged,
                });
                continue;
            }
        };
        let key = m.client_id.as_deref().map(|c| (m.sender, c));
        match key.and_then(|k| first.get(&k)) {
            Some(&k) => slots.push(Slot::RepeatOf(k)),
            None => {
                if let Some(key) = key {
                    first.insert(key, fresh.len());
                }
                slots.push(Slot::Fresh(fresh.len()));
                fresh.push(m);
            }
        }
    }
    let all_at_once = |results| Outcome {
        results,
        late: Vec::new(),
    };
    let stored = if placed.is_empty() {
        backend
            .store_batch(&fresh)
            .await
            .map(|stored| (stored, Vec::new()))
    } else {
        backend.store_batch_with(&fresh, &placed).await
    };
    match stored {
        Ok((stored, written)) if stored.len() == fresh.len() && written.len() == placed.len() => {
            let answers = answers(&slots, &stored, &written);
            // Unsettled: a message or change to retry (all of its room's
            // are), or a repeat of a message the batch refused (its room
            // gone, its sender not a member), which is no answer for a
            // repeat that goes to another room: one by one it could be new
            // there. They commit after the batch, in their order, so each
            // room's seqs still follow the slots. A change left out is
            // judged again by the one-by-one path.
            let mut results: Vec<Option<Done>> = Vec::with_capacity(answers.len());
            let mut late = Vec::new();
            let mut again = Vec::new();
            for (slot, (answer, entry)) in answers.into_iter().zip(&entries).enumerate() {
                if answer.is_none() {
                    late.push(slot);
                    again.push(entry.clone());
                }
                results.push(answer);
            }
            let changes_again = again.iter().any(|e| matches!(e, Entry::Change(..)))
                || stored.iter().any(|s| matches!(s, Stored::Alone));
            let mut settled = if again.is_empty() {
                Vec::new()
            } else if retries > 0 && !changes_again {
                Box::pin(commit(backend, again, retries - 1)).await.results
            } else {
                one_by_one(backend, again).await
            }
            .into_iter();
            let results = results
                .into_iter()
                .zip(&entries)
                .map(|(answer, entry)| {
                    answer.unwrap_or_else(|| {
                        settled.next().unwrap_or_else(|| entry.failed(miscount()))
                    })
                })
                .collect();
            return Outcome { results, late };
        }
        Ok((stored, written)) => {
            tracing::error!(
                sent = fresh.len(),
                answered = stored.len(),
                changes = placed.len(),
                changes_answered = written.len(),
                "append batch answered the wrong number of messages"
            );
            return all_at_once(entries.iter().map(|e| e.failed(miscount())).collect());
        }
        Err(StorageError::Unavailable(e)) => {
            let why = e.to_string();
            return all_at_once(
                entries
                    .iter()
                    .map(|e| e.failed(StorageError::Unavailable(why.clone().into())))
                    .collect(),
            );
        }
        Err(e) => {
            tracing::debug!(error = %e, size = entries.len(),
                "append batch rolled back; appending one by one");
        }
    }
    all_at_once(one_by_one(backend, entries).await)
}

/// Each entry on its own, in order: a message by the single append, a
/// change by the op's path (which judges it again if it went stale).
async fn one_by_one<B: BatchAppend>(backend: &B, entries: Vec<Entry>) -> Vec<Done> {
    let mut results = Vec::with_capacity(entries.len());
    for entry in entries {
        results.push(match entry {
            Entry::Message(message) => Done::Message(backend.append_one(message).await),
            Entry::Change(change, judged) => {
                Done::Change(backend.apply(&Op::Message(change, Some(judged))).await)
            }
        });
    }
    results
}

/// Each entry's answer from what the batch stored; `None` for an entry to
/// retry and for a repeat of a message the batch refused.
fn answers(slots: &[Slot], stored: &[Stored], written: &[Option<Changed>]) -> Vec<Option<Done>> {
    slots
        .iter()
        .map(|slot| match *slot {
            Slot::Fresh(k) => Some(Done::Message(match stored.get(k)? {
                Stored::New(message) => Ok(Appended {
                    message: message.clone(),
                    created: true,
                }),
                Stored::Original(message) => Ok(Appended {
                    message: message.clone(),
                    created: false,
                }),
                Stored::NoRoom => Err(StorageError::NotFound),
                Stored::NotMember { kind, state } => Err(StorageError::NotMember {
                    kind: *kind,
                    state: *state,
                }),
                Stored::Refused(why) => Err(StorageError::Refused(*why)),
                Stored::Retry | Stored::Alone => return None,
            })),
            Slot::RepeatOf(k) => match stored.get(k)? {
                Stored::New(message) | Stored::Original(message) => {
                    Some(Done::Message(Ok(Appended {
                        message: message.clone(),
                        created: false,
                    })))
                }
                Stored::NoRoom
                | Stored::NotMember { .. }
                | Stored::Refused(_)
                | Stored::Retry
                | Stored::Alone => None,
            },
            Slot::Change(k) => {
                let changed = written.get(k)?.clone()?;
                Some(Done::Change(Ok(Applied::Message(Box::new(changed)))))
            }
        })
        .collect()
}

fn miscount() -> StorageError {
    StorageError::Backend("append batch answered the wrong number of messages".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Authority, ChangeOp};
    use chat_core::Timestamp;

    fn append(room: i64, body: &str) -> Work {
        let (reply, _) = oneshot::channel();
        Work::Append(NewMessage::new(RoomId(room), UserId(1), body), reply)
    }

    fn edit(room: Option<i64>) -> Work {
        let (reply, _) = oneshot::channel();
        Work::Apply(
            Op::Message(
                MessageChange {
                    message: chat_core::MessageId(1),
                    room: room.map(RoomId),
                    user: UserId(1),
                    op: ChangeOp::Delete,
                    allowed: Authority::Sender,
                    created_at: Timestamp::now(),
                },
                None,
            ),
            reply,
        )
    }

    /// What each unit holds: a batch's bodies, or `op@room`.
    fn shape(units: &[Unit]) -> Vec<String> {
        units
            .iter()
            .map(|u| match u {
                Unit::Batch(run, _) => run
                    .iter()
                    .map(|item| match item {
                        Item::Append(m, _) => m.body.clone(),
                        Item::Change(c, _, _) => format!("change@{}", c.message.get()),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Unit::Apply(op, _) => match op {
                    Op::Message(c, _) => format!("op@{:?}", c.room.map(RoomId::get)),
                    Op::Member(m) => format!("member@{}", m.room.get()),
                    Op::Room(r) => format!("room@{}", r.room.get()),
                },
            })
            .collect()
    }

    #[test]
    fn ops_run_beside_the_batch_on_other_rooms_and_each_room_keeps_its_order() {
        let mut lanes = Lanes::default();
        let mut pending: VecDeque<Work> = [
            append(1, "a1"),
            edit(Some(2)),
            append(2, "b1"),
            edit(Some(1)),
            append(3, "c1"),
            append(1, "a2"),
        ]
        .into();
        let units = lanes.schedule(&mut pending, 4);
        // Room 1's edit waits for the batch holding a1, and a2 for the
        // edit; room 2's message waits for its edit; room 3 joins the batch.
        assert_eq!(shape(&units), vec!["op@Some(2)", "a1,c1"]);
        assert_eq!(pending.len(), 3);
        // Nothing more while they run, but a new room's op.
        pending.push_back(edit(Some(4)));
        let more = lanes.schedule(&mut pending, 2);
        assert_eq!(shape(&more), vec!["op@Some(4)"]);
        for unit in units.iter().chain(&more) {
            lanes.release(&unit.started());
        }
        // Then room 1's edit and room 2's message; a2 still after the edit.
        let next = lanes.schedule(&mut pending, 4);
        assert_eq!(shape(&next), vec!["op@Some(1)", "b1"]);
        for unit in &next {
            lanes.release(&unit.started());
        }
        assert_eq!(shape(&lanes.schedule(&mut pending, 4)), vec!["a2"]);
        assert!(pending.is_empty());
    }

    #[test]
    fn the_messages_behind_an_op_go_beside_the_batch_in_flight() {
        let mut lanes = Lanes::default();
        let mut pending: VecDeque<Work> = [edit(Some(1)), append(1, "a1"), append(2, "b1")].into();
        let first = lanes.schedule(&mut pending, 4);
        assert_eq!(shape(&first), vec!["op@Some(1)", "b1"]);
        // While b1's batch commits, more arrive for both rooms.
        pending.push_back(append(2, "b2"));
        pending.push_back(append(1, "a2"));
        assert!(lanes.schedule(&mut pending, 3).is_empty());
        // The op is done: room 1's messages go at once, room 2's wait for
        // the batch in flight.
        let (op, batch) = (first[0].started(), first[1].started());
        lanes.release(&op);
        let behind = lanes.schedule(&mut pending, 3);
        assert_eq!(shape(&behind), vec!["a1,a2"]);
        // Only once: the next message of room 1 joins the next batch.
        pending.push_back(append(1, "a3"));
        for unit in &behind {
            lanes.release(&unit.started());
        }
        assert!(lanes.schedule(&mut pending, 3).is_empty());
        lanes.release(&batch);
        assert_eq!(shape(&lanes.schedule(&mut pending, 3)), vec!["b2,a3"]);
        assert!(pending.is_empty());
    }

    /// A change to message `message` of `room`, judged before it was
    /// queued.
    fn judged(room: i64, message: i64, op: ChangeOp) -> Work {
        let (reply, _) = oneshot::channel();
        let target = StoredMessage {
            id: chat_core::MessageId(message),
            room: RoomId(room),
            seq: 1,
            sender: UserId(1),
            sender_name: "ann".into(),
            body: "hi".into(),
            created_at: Timestamp::now(),
            client_id: None,
            edited_at: None,
            version: 0,
            deleted: false,
            pinned: false,
            reply: None,
            thread_root: None,
            reply_count: 0,
            last_reply_at: None,
            mentions: Vec::new(),
            attachments: Vec::new(),
        };
        Work::Apply(
            Op::Message(
                MessageChange {
                    message: chat_core::MessageId(message),
                    room: None,
                    user: UserId(1),
                    op,
                    allowed: Authority::Sender,
                    created_at: Timestamp::now(),
                },
                Some(Box::new(Judgement {
                    target,
                    kind: UpdateKind::Edited,
                    events: 0,
                })),
            ),
            reply,
        )
    }

    fn edit_op() -> ChangeOp {
        ChangeOp::Edit { body: "x".into() }
    }

    #[test]
    fn a_judged_change_goes_in_the_batch_at_its_place_one_per_room() {
        let mut lanes = Lanes {
            changes_in_batch: true,
            ..Lanes::default()
        };
        let mut reply_to_7 = NewMessage::new(RoomId(2), UserId(1), "b2");
        reply_to_7.reply_to = Some(chat_core::MessageId(7));
        let (reply, _) = oneshot::channel();
        let mut pending: VecDeque<Work> = [
            append(1, "a1"),
            judged(1, 5, edit_op()),
            append(1, "a2"),
            judged(1, 6, edit_op()),
            append(1, "a3"),
            judged(2, 7, edit_op()),
            Work::Append(reply_to_7, reply),
            append(3, "c1"),
            judged(3, 8, ChangeOp::Delete),
        ]
        .into();
        let units = lanes.schedule(&mut pending, 4);
        // Room 1's second change waits for the next batch, and a3 behind
        // it; the reply quoting message 7 after its edit waits too; a
        // deletion runs as an op of its own, after c1's batch.
        assert_eq!(shape(&units), vec!["a1,change@5,a2,change@7,c1"]);
        for unit in &units {
            lanes.release(&unit.started());
        }
        let next = lanes.schedule(&mut pending, 4);
        assert_eq!(shape(&next), vec!["op@None", "change@6,a3,b2"]);
        assert!(pending.is_empty());
    }

    #[test]
    fn without_batched_changes_a_judged_change_runs_as_an_op() {
        // A backend that writes no change in a batch runs it as an op.
        let mut lanes = Lanes::default();
        let mut pending: VecDeque<Work> = [append(1, "a1"), judged(2, 5, edit_op())].into();
        let units = lanes.schedule(&mut pending, 4);
        assert_eq!(shape(&units), vec!["op@None", "a1"]);
    }

    #[test]
    fn an_op_of_unknown_room_runs_alone() {
        let mut lanes = Lanes::default();
        let mut pending: VecDeque<Work> = [append(1, "a1"), edit(None), append(2, "b1")].into();
        let first = lanes.schedule(&mut pending, 4);
        assert_eq!(shape(&first), vec!["a1"], "not past the unknown room");
        for unit in &first {
            lanes.release(&unit.started());
        }
        let alone = lanes.schedule(&mut pending, 4);
        assert_eq!(shape(&alone), vec!["op@None"]);
        assert!(
            lanes.schedule(&mut pending, 4).is_empty(),
            "it holds everything"
        );
        for unit in &alone {
            lanes.release(&unit.started());
        }
        assert_eq!(shape(&lanes.schedule(&mut pending, 4)), vec!["b1"]);
    }

    #[test]
    fn one_lane_runs_one_thing_at_a_time_in_arrival_order() {
        let mut lanes = Lanes::default();
        let mut pending: VecDeque<Work> = [edit(Some(1)), append(2, "b1"), append(3, "c1")].into();
        let mut order = Vec::new();
        while !pending.is_empty() {
            let units = lanes.schedule(&mut pending, 1);
            assert_eq!(units.len(), 1);
            order.extend(shape(&units));
            for unit in &units {
                lanes.release(&unit.started());
            }
        }
        assert_eq!(order, vec!["op@Some(1)", "b1,c1"]);
    }
}
