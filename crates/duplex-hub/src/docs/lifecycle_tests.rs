//! The documents end to end inside the crate: peers joined to [`Docs`]
//! directly (no sockets), a real SQLite store in a temporary folder.

use std::sync::Arc;
use std::time::Duration;

use duplex::{CloseCode, Message as WsMessage};
use tokio::sync::mpsc;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use super::doc::Cmd;
use super::sync::Incoming;
use super::{Docs, DocsConfig, Peer};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::registry::testing;

struct Client {
    peer: Arc<Peer>,
    frames: testing::Peer,
    commands: mpsc::Sender<Cmd>,
    doc: Doc,
    awareness_at_join: Vec<yrs::sync::AwarenessUpdate>,
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn join(docs: &Arc<Docs>, name: &str, writable: bool) -> Client {
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (outbox, frames) = testing::outbox(id, 4096, 1 << 20, &Arc::new(Metrics::default()));
    let peer = Arc::new(Peer {
        id,
        outbox,
        writable,
    });
    let commands = docs.join(name, peer.clone()).await.unwrap();
    let mut client = Client {
        peer,
        frames,
        commands,
        doc: Doc::new(),
        awareness_at_join: Vec::new(),
    };
    // The server's SyncStep1 comes first; the answer carries our state.
    match client.next().await {
        Message::Sync(SyncMessage::SyncStep1(_)) => {}
        other => panic!("expected SyncStep1, got {other:?}"),
    }
    let sv = client.doc.transact().state_vector();
    client.send(Incoming::SyncStep1(sv)).await;
    // The awareness states, if anyone is there, then the answer.
    loop {
        match client.next().await {
            Message::Sync(SyncMessage::SyncStep2(update)) => {
                client.apply(&update);
                break;
            }
            Message::Awareness(update) => client.awareness_at_join.push(update),
            other => panic!("expected SyncStep2, got {other:?}"),
        }
    }
    client
}

impl Client {
    async fn next(&mut self) -> Message {
        let frame = tokio::time::timeout(Duration::from_secs(10), self.frames.recv())
            .await
            .expect("a message within 10 s");
        let WsMessage::Binary(bytes) = &frame else {
            panic!("not binary");
        };
        Message::decode_v1(bytes).expect("a y-websocket message")
    }

    async fn send(&self, message: Incoming) {
        self.commands
            .send(Cmd::Message {
                peer: self.peer.id,
                message,
            })
            .await
            .unwrap();
    }

    fn apply(&self, update: &[u8]) {
        self.doc
            .transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }

    /// Types `text` at the end and sends the update.
    async fn type_text(&self, text: &str) -> Vec<u8> {
        let t = self.doc.get_or_insert_text("text");
        let before = self.doc.transact().state_vector();
        {
            let mut txn = self.doc.transact_mut();
            let len = t.len(&txn);
            t.insert(&mut txn, len, text);
        }
        let update = self.doc.transact().encode_diff_v1(&before);
        self.send(Incoming::Update(update.clone())).await;
        update
    }

    /// Receives the next Update and applies it.
    async fn receive_update(&mut self) {
        loop {
            match self.next().await {
                Message::Sync(SyncMessage::Update(u) | SyncMessage::SyncStep2(u)) => {
                    self.apply(&u);
                    return;
                }
                Message::Awareness(_) => continue,
                other => panic!("expected an update, got {other:?}"),
            }
        }
    }

    fn text(&self) -> String {
        let t = self.doc.get_or_insert_text("text");
        t.get_string(&self.doc.transact())
    }

    async fn leave(self) {
        let _ = self.commands.send(Cmd::Leave { peer: self.peer.id }).await;
    }

    async fn closed(&self) -> (CloseCode, String) {
        tokio::time::timeout(Duration::from_secs(10), self.peer.outbox.closed())
            .await
            .expect("closed within 10 s")
    }
}

fn config() -> DocsConfig {
    DocsConfig {
        unload_after_ms: 60_000,
        ..DocsConfig::default()
    }
}

async fn stored_text(docs: &Docs, name: &str) -> (String, usize) {
    let stored = docs.log.load(name).await.unwrap();
    let (doc, failed) = super::doc::build(&stored);
    let t = doc.get_or_insert_text("text");
    let text = t.get_string(&doc.transact());
    (text, failed)
}

#[tokio::test]
async fn updates_are_stored_and_sent_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let docs = Docs::open(config(), dir.path(), None, Clock::system()).unwrap();
    let a = join(&docs, "n", true).await;
    let mut b = join(&docs, "n", true).await;
    a.type_text("hello").await;
    b.receive_update().await;
    assert_eq!(b.text(), "hello");
    // B got it, so it is stored.
    assert_eq!(stored_text(&docs, "n").await, ("hello".to_string(), 0));
    let mut c = join(&docs, "n", true).await;
    assert_eq!(
        c.text(),
        "hello",
        "a late joiner gets everything in SyncStep2"
    );
    b.type_text(", world").await;
    c.receive_update().await;
    assert_eq!(c.text(), "hello, world");
    docs.shutdown().await;
}

#[tokio::test]
async fn read_only_updates_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let docs = Docs::open(config(), dir.path(), None, Clock::system()).unwrap();
    let a = join(&docs, "n", true).await;
    let mut reader = join(&docs, "n", false).await;
    reader.type_text("forbidden").await;
    a.type_text("allowed").await;
    reader.receive_update().await;
    assert!(
        futures_util::FutureExt::now_or_never(reader.peer.outbox.closed()).is_none(),
        "read-only stays connected"
    );
    assert_eq!(stored_text(&docs, "n").await.0, "allowed");
    assert_eq!(
        docs.metrics()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    docs.shutdown().await;
}

#[tokio::test]
async fn malformed_updates_close_with_1007_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let docs = Docs::open(config(), dir.path(), None, Clock::system()).unwrap();
    let a = join(&docs, "n", true).await;
    a.type_text("intact").await;
    let bad = join(&docs, "n", true).await;
    bad.send(Incoming::Update(vec![5, 0xff, 0xff, 1, 2, 3]))
        .await;
    let (code, reason) = bad.closed().await;
    assert_eq!(code, CloseCode::INVALID_PAYLOAD);
    assert_eq!(reason, "malformed Yjs update");
    // An update that decodes but whose content is cut short.
    let other = Doc::new();
    other
        .get_or_insert_text("text")
        .insert(&mut other.transact_mut(), 0, "xyz");
    let mut update = other
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    update.truncate(update.len() - 3);
    let bad2 = join(&docs, "n", true).await;
    bad2.send(Incoming::Update(update)).await;
    assert_eq!(bad2.closed().await.0, CloseCode::INVALID_PAYLOAD);
    let stored = docs.log.load("n").await.unwrap();
    assert_eq!(stored.updates.len(), 1, "only the good update is stored");
    assert_eq!(stored_text(&docs, "n").await, ("intact".to_string(), 0));
    let fresh = join(&docs, "n", true).await;
    assert_eq!(fresh.text(), "intact");
    docs.shutdown().await;
}

#[tokio::test]
async fn the_log_is_compacted_and_survives_a_reopen_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let docs = Docs::open(
        DocsConfig {
            compact_every: 4,
            ..config()
        },
        dir.path(),
        None,
        Clock::system(),
    )
    .unwrap();
    let a = join(&docs, "n", true).await;
    let mut b = join(&docs, "n", true).await;
    for i in 0..10 {
        a.type_text(&format!("{i} ")).await;
        b.receive_update().await;
    }
    let stored = docs.log.load("n").await.unwrap();
    assert!(stored.snapshot.is_some(), "compacted");
    assert!(
        stored.updates.len() < 4,
        "{} updates left",
        stored.updates.len()
    );
    assert_eq!(stored.last_seq, 10);
    let sv = a.doc.transact().state_vector();
    let state = a
        .doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    docs.shutdown().await;
    drop(docs);

    let docs = Docs::open(config(), dir.path(), None, Clock::system()).unwrap();
    let c = join(&docs, "n", true).await;
    assert_eq!(c.text(), "0 1 2 3 4 5 6 7 8 9 ");
    assert_eq!(c.doc.transact().state_vector(), sv);
    assert_eq!(
        c.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
        state
    );
    docs.shutdown().await;
}

#[tokio::test]
async fn joining_while_the_document_unloads_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let docs = Docs::open(
        DocsConfig {
            unload_after_ms: 1,
            compact_every: 3,
            ..DocsConfig::default()
        },
        dir.path(),
        None,
        Clock::system(),
    )
    .unwrap();
    let mut expected = String::new();
    for i in 0..60 {
        let a = join(&docs, "n", true).await;
        assert_eq!(a.text(), expected, "round {i}");
        let word = format!("{i},");
        a.type_text(&word).await;
        expected.push_str(&word);
        // A second connection sees the update: it is stored.
        let b = join(&docs, "n", true).await;
        assert_eq!(b.text(), expected, "round {i}");
        a.leave().await;
        b.leave().await;
        // Every few rounds, wait for the unload to finish.
        if i % 3 == 0 {
            while docs.loaded() > 0 {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    assert!(
        docs.metrics()
            .loads
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 20,
        "the document was unloaded and loaded again"
    );
    docs.shutdown().await;
}

#[tokio::test]
async fn a_document_over_its_size_limit_refuses_updates_with_1009() {
    let dir = tempfile::tempdir().unwrap();
    let docs = Docs::open(
        DocsConfig {
            max_document_size: 4096,
            ..config()
        },
        dir.path(),
        None,
        Clock::system(),
    )
    .unwrap();
    let a = join(&docs, "n", true).await;
    let chunk = "x".repeat(1000);
    for _ in 0..3 {
        a.type_text(&chunk).await;
    }
    // Three updates of 1,000 characters take about 3,050 bytes (the client id
    // and clocks add a few bytes each, more or fewer with the random id);
    // 1,500 more are over 4,096 whatever the id.
    a.type_text(&"y".repeat(1500)).await;
    let (code, reason) = a.closed().await;
    assert_eq!(code, CloseCode::MESSAGE_TOO_BIG);
    assert!(reason.contains("4096"), "{reason}");
    let stored = docs.log.load("n").await.unwrap();
    assert!(stored.size() <= 4096, "{}", stored.size());
    assert_eq!(stored_text(&docs, "n").await.0.len(), 3000);
    docs.shutdown().await;
}

/// Found by mutating a valid update: yrs applies it (its parts wait for
/// others), then panics encoding the document. The update is refused and
/// the document stays usable.
const POISON: &str = "01039f990a8fbff6cf0f52000401047465787403773020819f99a88fbff6cf0f0205849f99a88fbff6cf0f073e2077332077342077352077362077372077382077392077313020773131207731322077313320773134207731352077313620773137207731382077313920019f99a88fbff6cf0f010305";

#[tokio::test]
async fn regression_an_update_that_makes_yrs_panic_when_encoding_is_refused() {
    let bytes: Vec<u8> = (0..POISON.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&POISON[i..i + 2], 16).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let docs = Docs::open(config(), dir.path(), None, Clock::system()).unwrap();
    let a = join(&docs, "n", true).await;
    a.type_text("intact").await;
    let bad = join(&docs, "n", true).await;
    bad.send(Incoming::Update(bytes)).await;
    let (code, reason) = bad.closed().await;
    assert_eq!(code, CloseCode::INVALID_PAYLOAD);
    assert_eq!(reason, "the Yjs update does not apply to the document");
    // The document still answers SyncStep1 (which encodes it) and holds
    // only the good update.
    let fresh = join(&docs, "n", true).await;
    assert_eq!(fresh.text(), "intact");
    assert_eq!(docs.log.load("n").await.unwrap().updates.len(), 1);
    docs.shutdown().await;
}

#[test]
fn whatever_is_integrated_can_be_encoded_whatever_the_mutation() {
    // Valid updates, mutated (bytes changed, removed, inserted), applied to
    // a document with content: no panic gets out, and a document that took
    // an update can still be encoded (as SyncStep2 and snapshots need).
    let source = Doc::new();
    let t = source.get_or_insert_text("text");
    for i in 0..12 {
        let mut txn = source.transact_mut();
        let len = t.len(&txn);
        t.insert(&mut txn, len, &format!("w{i} "));
    }
    t.remove_range(&mut source.transact_mut(), 3, 5);
    let valid = source
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut bytes = valid.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() as usize) % bytes.len();
            match next() % 3 {
                0 => bytes[at] = next() as u8,
                1 if bytes.len() > 1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, next() as u8),
            }
        }
        let doc = Doc::new();
        doc.get_or_insert_text("text")
            .insert(&mut doc.transact_mut(), 0, "abc");
        match super::doc::integrate(&doc, &bytes) {
            Ok(()) => {
                accepted += 1;
                let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    doc.transact()
                        .encode_state_as_update_v1(&StateVector::default())
                }));
                assert!(encoded.is_ok(), "accepted but not encodable: {bytes:02x?}");
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        accepted > 100 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}

fn awareness_of(entries: &[(u64, u32, &str)]) -> Incoming {
    use yrs::sync::AwarenessUpdate;
    use yrs::sync::awareness::AwarenessUpdateEntry;
    Incoming::Awareness(AwarenessUpdate {
        clients: entries
            .iter()
            .map(|&(id, clock, json)| {
                (
                    yrs::block::ClientID::new(id),
                    AwarenessUpdateEntry {
                        clock,
                        json: json.into(),
                    },
                )
            })
            .collect(),
    })
}

/// The next awareness message, skipping anything else.
async fn next_awareness(client: &mut Client) -> yrs::sync::AwarenessUpdate {
    loop {
        if let Message::Awareness(update) = client.next().await {
            return update;
        }
    }
}

#[tokio::test]
async fn awareness_is_relayed_queried_and_removed_when_its_connection_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let docs = Docs::open(config(), dir.path(), None, Clock::system()).unwrap();
    let mut a = join(&docs, "n", true).await;
    let mut b = join(&docs, "n", true).await;
    a.send(awareness_of(&[(7, 1, r#"{"user":{"name":"ann"}}"#)]))
        .await;
    // To both, the sender too.
    for client in [&mut a, &mut b] {
        let update = next_awareness(client).await;
        assert_eq!(
            &*update.clients[&yrs::block::ClientID::new(7)].json,
            r#"{"user":{"name":"ann"}}"#
        );
    }
    // An echo at the same clock (as providers send) is not sent on; a query
    // gets every state.
    b.send(awareness_of(&[(7, 1, r#"{"user":{"name":"ann"}}"#)]))
        .await;
    b.send(Incoming::QueryAwareness).await;
    let all = next_awareness(&mut b).await;
    assert_eq!(all.clients.len(), 1);
    // A newcomer gets the states right after SyncStep1.
    let mut c = join(&docs, "n", true).await;
    assert_eq!(c.awareness_at_join.len(), 1);
    assert_eq!(c.awareness_at_join[0].clients.len(), 1);
    a.leave().await;
    // B and C hear that ann left: null at the same clock.
    for client in [&mut b, &mut c] {
        let gone = next_awareness(client).await;
        let entry = &gone.clients[&yrs::block::ClientID::new(7)];
        assert_eq!((&*entry.json, entry.clock), ("null", 1));
    }
    // One connection may not speak for more than 8 clients.
    let many: Vec<(u64, u32, &str)> = (100..110).map(|id| (id, 0, "{}")).collect();
    c.send(awareness_of(&many)).await;
    assert_eq!(c.closed().await.0, CloseCode::POLICY_VIOLATION);
    docs.shutdown().await;
}
