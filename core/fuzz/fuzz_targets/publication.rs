//! The publication parser behind every broadcaster (HTTP, Redis, Redis Streams, NATS) and the cluster pub/sub:
//! any body is parsed or refused without a panic, and what it accepts survives the cluster wire format
//! unchanged, in order.

#![no_main]

use ferrocable::IngressMessage;
use ferrocable::broadcast::{encode_node_message, parse_ingress, parse_node_message};
use ferrocable::protocol::{broadcast_payload, json_string, message_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_node_message(data);
    let Ok(messages) = parse_ingress(data) else { return };
    let mut relayed = Vec::with_capacity(messages.len());
    for message in &messages {
        let wire = encode_node_message("node", message);
        let (node, back) = parse_node_message(&wire).expect("a node message parses");
        assert_eq!(node.as_deref(), Some("node"));
        relayed.push(back);
        if let IngressMessage::Broadcast(publication) = message {
            let frame = message_frame(json_string("id").as_bytes(), &broadcast_payload(&publication.data));
            serde_json::from_slice::<serde::de::IgnoredAny>(&frame).expect("a broadcast frame is JSON");
        }
    }
    assert_eq!(relayed, messages, "order and content survive the cluster wire format");
});
