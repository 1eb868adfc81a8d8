//! `Sender`: prepared messages sent from other tasks straight to the socket,
//! over loopback TCP, with the queue of what the socket does not take at once
//! written by the reading half.

mod support;

use duplex::{
    CloseCode, Message, PreparedMessage, ReadHalf, Sender, TrySendError, WebSocketConfig, WriteHalf,
};
use futures_util::StreamExt;
use support::within;
use tokio::net::{TcpListener, TcpStream};

type Halves = (ReadHalf<TcpStream>, WriteHalf<TcpStream>);

/// A server connection split in halves, and a client connected to it.
async fn pair(config: WebSocketConfig) -> (Halves, duplex::WebSocket<duplex::ClientStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        duplex::Acceptor::new()
            .config(config)
            .accept(tcp)
            .await
            .unwrap()
            .split()
    });
    let client = duplex::connect(&url).await.unwrap();
    (server.await.unwrap(), client)
}

/// Reads the reading half until it ends, as a connection's task does.
fn keep_reading(mut read: ReadHalf<TcpStream>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while read.next().await.is_some() {} })
}

#[tokio::test]
async fn a_prefetch_is_only_a_hint() {
    within(async {
        let ((read, write), mut client) = pair(WebSocketConfig::default()).await;
        let reader = keep_reading(read);
        let sender = write.sender();
        sender.prefetch();
        assert_eq!(sender.queued_frames(), 0);
        assert_eq!(sender.buffered_amount(), 0);
        sender
            .try_send_prepared(&PreparedMessage::text("after a prefetch"))
            .unwrap();
        let message = client.next().await.unwrap().unwrap();
        assert_eq!(message, Message::text("after a prefetch"));
        // On a closed connection too: the hint reads nothing.
        drop(client);
        reader.await.unwrap();
        sender.prefetch();
        assert_eq!(
            sender.try_send_prepared(&PreparedMessage::text("late")),
            Err(TrySendError::Closed)
        );
    })
    .await;
}

#[tokio::test]
async fn messages_sent_from_another_task_arrive_in_order() {
    within(async {
        let ((read, write), mut client) = pair(WebSocketConfig::default()).await;
        let reader = keep_reading(read);
        let sender = write.sender();
        let sending = tokio::task::spawn_blocking(move || {
            for i in 0..2000u32 {
                let prepared = PreparedMessage::text(format!("message {i}"));
                sender.try_send_prepared(&prepared).unwrap();
            }
        });
        for i in 0..2000u32 {
            let message = client.next().await.unwrap().unwrap();
            assert_eq!(message, Message::text(format!("message {i}")));
        }
        sending.await.unwrap();
        drop(write);
        reader.abort();
    })
    .await;
}

#[tokio::test]
async fn a_peer_that_does_not_read_fills_the_queue_and_nothing_is_lost() {
    within(async {
        let ((read, write), mut client) = pair(WebSocketConfig::default()).await;
        let reader = keep_reading(read);
        let sender: Sender = write.sender().with_queue_limit(16);
        // The socket buffers fill, then the queue, up to its 16 frames (1 KiB
        // frames: the byte bound, max_write_buffer, is far away).
        let payload = vec![7u8; 1 << 10];
        let prepared = PreparedMessage::binary(payload.clone());
        let mut sent = 0;
        loop {
            match sender.try_send_prepared(&prepared) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full) => break,
                Err(err) => panic!("{err}"),
            }
            assert!(sent < 1_000_000, "the queue never filled");
        }
        assert_eq!(sender.queued_frames(), 16, "{sender:?}");
        // The client reads: everything queued arrives, and the reading half
        // writes the queue out as the socket drains.
        for _ in 0..sent {
            let message = client.next().await.unwrap().unwrap();
            assert_eq!(message.as_data()[..], payload[..]);
        }
        assert_eq!(sender.queued_frames(), 0);
        assert_eq!(sender.buffered_amount(), 0);
        sender
            .try_send_prepared(&PreparedMessage::text("after"))
            .unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::text("after")
        );
        drop(write);
        reader.abort();
    })
    .await;
}

#[tokio::test]
async fn after_the_close_frame_the_sender_says_closed() {
    within(async {
        let ((read, mut write), mut client) = pair(WebSocketConfig::default()).await;
        let reader = keep_reading(read);
        let sender = write.sender();
        write.close(CloseCode::NORMAL, "bye").await.unwrap();
        assert_eq!(
            sender.try_send_prepared(&PreparedMessage::text("late")),
            Err(TrySendError::Closed)
        );
        match client.next().await.unwrap().unwrap() {
            Message::Close(Some(frame)) => assert_eq!(frame.reason, "bye"),
            other => panic!("{other:?}"),
        }
        reader.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_sender_to_a_vanished_peer_fails_and_the_reading_half_ends() {
    within(async {
        let ((read, write), client) = pair(WebSocketConfig::default()).await;
        let reader = keep_reading(read);
        let sender = write.sender();
        drop(client);
        let prepared = PreparedMessage::binary(vec![0u8; 16 << 10]);
        // The first writes may land in the socket before the reset arrives.
        let mut outcome = Ok(());
        for _ in 0..10_000 {
            outcome = sender.try_send_prepared(&prepared);
            if outcome.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(outcome, Err(TrySendError::Closed));
        reader.await.unwrap();
    })
    .await;
}

/// One task sending to many connections in one poll, as a broadcast does:
/// every frame goes straight to its socket, none waits in a queue (tokio's
/// cooperative budget, 128 operations a poll, does not push the rest onto
/// the slow path).
#[tokio::test]
async fn a_broadcast_from_one_task_writes_every_frame_at_once() {
    within(async {
        let mut connections = Vec::new();
        for _ in 0..300 {
            connections.push(pair(WebSocketConfig::default()).await);
        }
        let senders: Vec<Sender> = connections.iter().map(|((_, w), _)| w.sender()).collect();
        let prepared = PreparedMessage::text("to everyone");
        // In one poll of this task: no await between the sends.
        for sender in &senders {
            sender.try_send_prepared(&prepared).unwrap();
        }
        let queued: usize = senders.iter().map(Sender::queued_frames).sum();
        assert_eq!(queued, 0, "frames left queued instead of written");
        for (_, client) in &mut connections {
            let message = client.next().await.unwrap().unwrap();
            assert_eq!(message, Message::text("to everyone"));
        }
    })
    .await;
}
