//! The loopback control API of sfu-mock: join, leave, stats, and bad requests.
#![allow(clippy::unwrap_used)]

mod common;

use ringcast_core::signaling::Ssrc;
use ringcast_core::signaling::group::JoinResponse;
use serde_json::Value;
use sfu_mock::server::{Server, ServerOptions};

fn post(url: &str, body: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.post(url).send(body).unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

#[test]
fn join_answers_with_telegram_json_and_stats_list_the_participant() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let http = server.http_addr().unwrap();
    let (status, answer) = post(
        &format!("http://{http}/v1/chats/-1001/join"),
        &common::join_payload("abcdEFGH1234", 4242),
    );
    assert_eq!(status, 200, "{answer}");
    let parsed = JoinResponse::parse(answer.to_string().as_bytes()).unwrap();
    // Telegram's shape: the SFU's one UDP address as a host candidate, ports as strings,
    // Opus 111 and the audio-level extension.
    assert_eq!(parsed.transport.candidates.len(), 1);
    assert_eq!(parsed.transport.candidates[0].address(), server.udp_addr());
    assert!(answer["transport"]["candidates"][0]["port"].is_string());
    assert_eq!(parsed.opus_pt(), 111);
    assert_eq!(
        parsed.audio_extension_id("urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        Some(1)
    );
    // Telegram always answers with a video section, even to an audio-only join (ntgcalls
    // refuses an answer without one and aborts on empty lists): VP8 + RTX, abs-send-time,
    // transport-cc, video-orientation, and a signed int32 probing SSRC.
    let video = &answer["video"];
    let pts = video["payload-types"].as_array().unwrap();
    assert_eq!(pts[0]["name"], "VP8");
    assert_eq!(pts[0]["id"], 100);
    assert_eq!(pts[1]["name"], "rtx");
    assert_eq!(pts[1]["parameters"]["apt"], 100);
    let ext_ids: Vec<u64> = video["rtp-hdrexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ext_ids, [2, 3, 13]);
    assert_eq!(video["server_sources"][0], -1_017_713_629);
    let parsed_video = parsed.video.as_ref().unwrap();
    assert_eq!(parsed_video.server_sources, vec![Ssrc(3_277_253_667)]);
    let stats: Value = serde_json::from_str(
        &ureq::get(&format!("http://{http}/v1/stats"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        stats["delay_dropped"], 0,
        "no latency, nothing held back or dropped"
    );
    let list = stats["chats"]["-1001"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["ssrc"], 4242);
    assert_eq!(list[0]["connected"], false);
    assert_eq!(list[0]["packets"], 0);

    let (status, body) = post(
        &format!("http://{http}/v1/chats/-1001/leave"),
        r#"{"ssrc": 4242}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &format!("http://{http}/v1/chats/-1001/leave"),
        r#"{"ssrc": 4242}"#,
    );
    assert_eq!(status, 404, "{body}");
    let left = server.stats().unwrap();
    assert_eq!(left["chats"]["-1001"][0]["left"], true);
}

#[test]
fn bad_join_payloads_get_400_with_the_field_named() {
    let server = Server::start(ServerOptions::default()).unwrap();
    let url = format!("http://{}/v1/chats/1/join", server.http_addr().unwrap());
    let good = common::join_payload("abcdEFGH1234", 1);
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "json"),
        (good[..good.len() / 2].to_owned(), "json"),
        (good.replace("\"ssrc\":1", "\"ssrc\":\"x\""), "ssrc"),
        (good.replace("\"ssrc\":1", "\"ssrc\":1.5"), "ssrc"),
        (
            good.replace("sha-256", "md5")
                .replace(&vec!["AB"; 32].join(":"), "zz"),
            "fingerprint",
        ),
        (good.replace("\"ufrag\"", "\"uf\""), "ufrag"),
        ("[]".to_owned(), "$"),
        (format!("{{\"ufrag\":\"{}\"}}", "a".repeat(70_000)), "large"),
    ];
    for (body, needle) in cases {
        let (status, answer) = post(&url, &body);
        assert!(status == 400 || status == 413, "{body:.80}: {status}");
        let msg = answer["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{body:.80}: {msg}");
    }
    assert_eq!(
        server.stats().unwrap()["dropped"]["bad_joins"]
            .as_u64()
            .unwrap(),
        7
    );
    let (status, _) = post(
        &format!("http://{}/v1/nope", server.http_addr().unwrap()),
        "",
    );
    assert_eq!(status, 404);
}
