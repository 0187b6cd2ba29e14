//! Interop against Debian's headless Chromium (libwebrtc, an independent WebRTC stack) playing
//! the Telegram SFU's side of a ringcast group call.
//!
//! The test serves `interop/chromium/{index.html,sfu.js}` from a small HTTP server on loopback
//! and starts `chromium --headless=new` on it. The page makes an `RTCPeerConnection`
//! (`iceServers: []`), offers (so Chromium is ICE controlling) and POSTs its offer SDP; the test
//! turns Chromium's ICE credentials, DTLS fingerprint and 127.0.0.1 host candidate into the
//! Telegram-style response JSON for [`Engine::connect`], and answers the page with SDP built from
//! ringcast's join payload (ringcast's ufrag/pwd, fingerprint with `a=setup:passive` so Chromium
//! is the DTLS client, Opus PT 111, `ssrc-audio-level`, ringcast's SSRC and host candidate).
//! ringcast plays a tone; the page measures it with WebAudio (`AnalyserNode`, FFT 8192 at
//! 48 kHz: 5.86 Hz bins, parabolic peak interpolation) and `getStats()`, and POSTs the result.
//! In the second direction Chromium sends an `OscillatorNode` tone and ringcast
//! (`receive_audio(true)`) hands the Opus packets to the test, which decodes them.
//!
//! Needs `chromium` on PATH (installed by `scripts/setup.sh`): without it the test fails, it
//! does not skip. Chromium runs with a temporary profile in its own process group, which the
//! test kills at the end (also on panic).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringcast::{CallState, Engine, EventKind, StreamSource};
use sfu_mock::analysis::dominant_frequency_hz;

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// Whole-session bound: Chromium start, ICE/DTLS and the recording must fit in it.
const SESSION_LIMIT: Duration = Duration::from_secs(60);

/// Chromium in its own process group with a temporary profile; killed and removed on drop.
struct Browser {
    child: Child,
    profile: PathBuf,
    log: PathBuf,
}

impl Browser {
    fn start(url: &str, tag: &str) -> Self {
        let profile = std::env::temp_dir().join(format!(
            "ringcast-chromium-{}-{tag}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        fs::create_dir_all(&profile).unwrap();
        let log = profile.join("chromium.log");
        let stderr = fs::File::create(&log).unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--mute-audio",
                // Required: without it the AudioContext stays suspended (no user gesture in
                // a headless page) and the page never measures anything.
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                // Required: without it Chromium gathers no 127.0.0.1 candidate at all.
                "--allow-loopback-in-peer-connection",
                // Not needed by Chromium 156 (loopback candidates come as IPs anyway); kept so
                // a version that hides host IPs behind mDNS names still offers 127.0.0.1.
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--enable-logging=stderr",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run chromium (run scripts/setup.sh to install it): {e}")
            });
        Self {
            child,
            profile,
            log,
        }
    }

    /// The last lines of Chromium's stderr, for failure messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group we created for it: the browser and its zygote, renderer and
        // utility processes (`kill -KILL -<pgid>`; no unsafe code for kill(2) here).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.profile);
    }
}

/// What the page sends the test.
enum FromPage {
    Log(String),
    Offer(String, mpsc::Sender<String>),
    Result(String),
}

fn interop_file(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../interop/chromium")
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Serves one request per connection (Connection: close), each on its own thread.
fn serve(listener: TcpListener, params: String, tx: mpsc::Sender<FromPage>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { break };
        let tx = tx.clone();
        let params = params.clone();
        thread::spawn(move || {
            let _ = handle(stream, &params, &tx);
        });
    }
}

fn handle(stream: TcpStream, params: &str, tx: &mpsc::Sender<FromPage>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, reply): (&str, &str, Vec<u8>) = match (method, path) {
        ("GET", "/") => ("200 OK", "text/html", interop_file("index.html")),
        ("GET", "/sfu.js") => ("200 OK", "text/javascript", interop_file("sfu.js")),
        ("GET", "/params") => ("200 OK", "application/json", params.as_bytes().to_vec()),
        ("POST", "/log") => {
            let _ = tx.send(FromPage::Log(body));
            ("200 OK", "text/plain", Vec::new())
        }
        ("POST", "/offer") => {
            let (answer_tx, answer_rx) = mpsc::channel();
            let _ = tx.send(FromPage::Offer(body, answer_tx));
            match answer_rx.recv_timeout(Duration::from_secs(20)) {
                Ok(sdp) => ("200 OK", "application/sdp", sdp.into_bytes()),
                Err(_) => ("500 Internal Server Error", "text/plain", Vec::new()),
            }
        }
        ("POST", "/result") => {
            let _ = tx.send(FromPage::Result(body));
            ("200 OK", "text/plain", Vec::new())
        }
        _ => ("404 Not Found", "text/plain", Vec::new()),
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        reply.len()
    )?;
    stream.write_all(&reply)?;
    stream.flush()
}

/// What the test needs from Chromium's offer.
#[derive(Debug, Default)]
struct Offer {
    ufrag: String,
    pwd: String,
    sha256: String,
    mid: String,
    opus_pt: Option<u8>,
    audio_level_id: Option<u8>,
    /// (foundation, priority, ip, port) of udp host candidates on 127.0.0.1.
    loopback: Vec<(String, u32, String, u16)>,
    sendrecv: bool,
}

fn parse_offer(sdp: &str) -> Offer {
    let mut o = Offer::default();
    for line in sdp.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            o.ufrag = v.to_owned();
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            o.pwd = v.to_owned();
        } else if let Some(v) = line.strip_prefix("a=fingerprint:sha-256 ") {
            o.sha256 = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("a=mid:") {
            o.mid = v.to_owned();
        } else if line == "a=sendrecv" {
            o.sendrecv = true;
        } else if let Some(v) = line.strip_prefix("a=rtpmap:") {
            if v.to_ascii_lowercase().contains("opus/48000") {
                o.opus_pt = v.split_whitespace().next().and_then(|p| p.parse().ok());
            }
        } else if let Some(v) = line.strip_prefix("a=extmap:") {
            if v.contains(AUDIO_LEVEL_URI) {
                o.audio_level_id = v.split([' ', '/']).next().and_then(|id| id.parse().ok());
            }
        } else if let Some(v) = line.strip_prefix("a=candidate:") {
            // foundation component transport priority ip port typ type ...
            let f: Vec<&str> = v.split_whitespace().collect();
            if f.len() >= 8
                && f[1] == "1"
                && f[2].eq_ignore_ascii_case("udp")
                && f[4] == "127.0.0.1"
                && f[7] == "host"
                && let (Ok(priority), Ok(port)) = (f[3].parse(), f[5].parse())
            {
                o.loopback
                    .push((f[0].to_owned(), priority, f[4].to_owned(), port));
            }
        }
    }
    o
}

/// The Telegram SFU's response (`updateGroupCallConnection.params.data`) describing Chromium.
fn response_json(offer: &Offer, level_id: u8) -> serde_json::Value {
    let candidates: Vec<serde_json::Value> = offer
        .loopback
        .iter()
        .enumerate()
        .map(|(i, (foundation, priority, ip, port))| {
            serde_json::json!({
                "generation": "0", "component": "1", "protocol": "udp",
                "port": port.to_string(), "ip": ip, "foundation": foundation,
                "id": (i + 1).to_string(), "priority": priority.to_string(),
                "type": "host", "network": "0",
            })
        })
        .collect();
    serde_json::json!({
        "transport": {
            "ufrag": offer.ufrag,
            "pwd": offer.pwd,
            "fingerprints": [{"hash": "sha-256", "setup": "active", "fingerprint": offer.sha256}],
            "candidates": candidates,
        },
        "audio": {
            "payload-types": [{
                "id": 111, "name": "opus", "clockrate": 48000, "channels": 2,
                "parameters": {"minptime": 10, "useinbandfec": 1},
            }],
            "rtp-hdrexts": [{"id": level_id, "uri": AUDIO_LEVEL_URI}],
        },
    })
}

/// The answer SDP Chromium gets: ringcast's side of the call, from its join payload.
fn answer_sdp(join: &serde_json::Value, offer: &Offer, level_id: u8, engine: SocketAddr) -> String {
    let fp = join["fingerprints"]
        .as_array()
        .and_then(|fps| {
            fps.iter().find(|f| {
                f["hash"]
                    .as_str()
                    .is_some_and(|h| h.eq_ignore_ascii_case("sha-256"))
            })
        })
        .and_then(|f| f["fingerprint"].as_str())
        .expect("join payload has a sha-256 fingerprint");
    // The payload's ssrc may be written signed (Telegram's int32).
    let ssrc = join["ssrc"].as_i64().expect("join payload ssrc") as u32;
    let direction = if offer.sendrecv {
        "sendrecv"
    } else {
        "sendonly"
    };
    let mid = &offer.mid;
    [
        "v=0".to_owned(),
        "o=- 1 1 IN IP4 127.0.0.1".to_owned(),
        "s=-".to_owned(),
        "t=0 0".to_owned(),
        format!("a=group:BUNDLE {mid}"),
        "a=msid-semantic: WMS ringcast".to_owned(),
        "m=audio 9 UDP/TLS/RTP/SAVPF 111".to_owned(),
        "c=IN IP4 0.0.0.0".to_owned(),
        "a=rtcp:9 IN IP4 0.0.0.0".to_owned(),
        format!("a=ice-ufrag:{}", join["ufrag"].as_str().expect("ufrag")),
        format!("a=ice-pwd:{}", join["pwd"].as_str().expect("pwd")),
        format!("a=fingerprint:sha-256 {fp}"),
        "a=setup:passive".to_owned(),
        format!("a=mid:{mid}"),
        format!("a={direction}"),
        "a=rtcp-mux".to_owned(),
        format!("a=extmap:{level_id} {AUDIO_LEVEL_URI}"),
        "a=rtpmap:111 opus/48000/2".to_owned(),
        "a=fmtp:111 minptime=10;useinbandfec=1".to_owned(),
        format!("a=ssrc:{ssrc} cname:ringcast"),
        format!("a=ssrc:{ssrc} msid:ringcast audio"),
        format!(
            "a=candidate:1 1 udp 2130706431 {} {} typ host generation 0",
            engine.ip(),
            engine.port()
        ),
        "a=end-of-candidates".to_owned(),
        String::new(),
    ]
    .join("\r\n")
}

/// What one session measured on both sides.
struct Session {
    /// ringcast's audio SSRC.
    ssrc: u32,
    /// The page's result JSON.
    page: serde_json::Value,
    /// Mono PCM ringcast received from Chromium (empty unless Chromium sent a tone).
    received: Vec<f32>,
}

/// One call: ringcast plays `ringcast_hz` into Chromium; if `chromium_hz > 0` Chromium plays
/// that back and ringcast decodes it.
fn session(chat: i64, ringcast_hz: f32, chromium_hz: f32) -> Session {
    let started = Instant::now();
    let deadline = started + SESSION_LIMIT;
    let engine = Engine::builder()
        .shards(1)
        .receive_audio(chromium_hz > 0.0)
        .build()
        .unwrap();
    let join_text = engine.create_call(chat).unwrap();
    let join: serde_json::Value = serde_json::from_str(&join_text).unwrap();
    let our_ssrc = engine.audio_ssrc(chat).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let params = serde_json::json!({"send_hz": chromium_hz, "record_ms": 3000}).to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || serve(listener, params, tx));
    let browser = Browser::start(&url, &chat.to_string());

    let left = |what: &str| {
        deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| {
                panic!(
                    "session ran out of time ({SESSION_LIMIT:?}) waiting for {what}\nchromium log:\n{}",
                    browser.log_tail()
                )
            })
    };
    let mut connected = false;
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
    let mut pcm_buf = vec![0i16; 5760];
    let mut received = Vec::new();
    let mut foreign_ssrc = None;
    let page = loop {
        // Drain engine events between page messages (ConnectionChanged, AudioReceived).
        while let Ok(e) = engine.events().try_recv() {
            match e.kind {
                EventKind::ConnectionChanged(CallState::Connected) => connected = true,
                EventKind::ConnectionChanged(CallState::Ended(reason)) => panic!(
                    "ringcast's call ended: {reason:?}\nchromium log:\n{}",
                    browser.log_tail()
                ),
                EventKind::AudioReceived { ssrc, payload, .. } => {
                    assert_ne!(ssrc, our_ssrc, "ringcast got its own SSRC back");
                    foreign_ssrc.get_or_insert(ssrc);
                    let n = decoder.decode(&payload, &mut pcm_buf, false).unwrap();
                    received.extend(pcm_buf[..n].iter().map(|s| f32::from(*s) / 32768.0));
                }
                _ => {}
            }
        }
        let wait = left("the page's result").min(Duration::from_millis(20));
        match rx.recv_timeout(wait) {
            Ok(FromPage::Log(line)) => eprintln!("chromium page: {line}"),
            Ok(FromPage::Offer(sdp, reply)) => {
                let offer = parse_offer(&sdp);
                assert!(
                    !offer.loopback.is_empty(),
                    "Chromium offered no 127.0.0.1 udp host candidate:\n{sdp}"
                );
                assert_eq!(offer.opus_pt, Some(111), "Chromium's Opus PT:\n{sdp}");
                let level_id = offer
                    .audio_level_id
                    .unwrap_or_else(|| panic!("Chromium offered no ssrc-audio-level:\n{sdp}"));
                assert!(
                    !offer.ufrag.is_empty() && !offer.pwd.is_empty() && !offer.sha256.is_empty(),
                    "incomplete offer:\n{sdp}"
                );
                engine
                    .connect(chat, &response_json(&offer, level_id).to_string())
                    .unwrap();
                engine
                    .set_stream_sources(
                        chat,
                        StreamSource::Tone {
                            frequency_hz: ringcast_hz,
                        },
                    )
                    .unwrap();
                // The call's socket address is known once it connects.
                let engine_addr = engine
                    .call_info(chat)
                    .unwrap()
                    .local_addr
                    .expect("a connecting call has a local address");
                let _ = reply.send(answer_sdp(&join, &offer, level_id, engine_addr));
            }
            Ok(FromPage::Result(body)) => {
                break serde_json::from_str::<serde_json::Value>(&body)
                    .unwrap_or_else(|e| panic!("page result is not JSON ({e}): {body}"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("HTTP server stopped"),
        }
    };
    if let Some(err) = page.get("error") {
        panic!(
            "the page failed: {}\nchromium log:\n{}",
            err.as_str().unwrap_or_default(),
            browser.log_tail()
        );
    }
    // Late events: the Connected event may still be queued behind audio.
    while let Ok(e) = engine.events().try_recv() {
        if e.kind == EventKind::ConnectionChanged(CallState::Connected) {
            connected = true;
        }
    }
    assert!(connected, "ringcast never reported Connected: {page}");
    let info = engine.call_info(chat).unwrap();
    eprintln!("ringcast call stats with Chromium: {:?}", info.stats);
    drop(browser);
    engine.shutdown();
    eprintln!(
        "chromium session {chat}: {:.1} s, page {page}, ringcast received {} samples",
        started.elapsed().as_secs_f64(),
        received.len()
    );
    Session {
        ssrc: our_ssrc,
        page,
        received,
    }
}

fn check_page(page: &serde_json::Value, tone_hz: f64, ssrc: u32) {
    let get = |k: &str| {
        page[k]
            .as_f64()
            .unwrap_or_else(|| panic!("no {k} in {page}"))
    };
    assert_eq!(page["connection_state"], "connected", "{page}");
    assert_eq!(page["dtls_state"], "connected", "{page}");
    // Chromium offered and got a=setup:passive back: it is the DTLS client, ICE controlling.
    assert_eq!(page["dtls_role"], "client", "{page}");
    assert_eq!(page["ice_role"], "controlling", "{page}");
    // 3 s of 20 ms packets are 150; Chromium counts from the first one after DTLS.
    assert!(get("packets_received") >= 100.0, "too few packets: {page}");
    assert_eq!(
        page["inbound_ssrc"], ssrc,
        "Chromium received another SSRC: {page}"
    );
    // The peak must stand out of silence (a muted or stalled track reads -inf / about -100 dB).
    assert!(get("peak_db") > -60.0, "no audible tone: {page}");
    let hz = get("dominant_hz");
    assert!(
        (hz - tone_hz).abs() <= 10.0,
        "Chromium heard {hz} Hz, ringcast played {tone_hz} Hz (bin {} Hz): {page}",
        get("bin_hz")
    );
}

#[test]
fn chromium_as_sfu_hears_ringcast_tone() {
    let s = session(1, 440.0, 0.0);
    check_page(&s.page, 440.0, s.ssrc);
    assert!(
        s.received.is_empty(),
        "Chromium sent nothing, yet ringcast received audio"
    );
}

#[test]
fn chromium_and_ringcast_hear_each_other() {
    // Another pitch than above: the measurement follows the tone, it is not a constant.
    let s = session(2, 1000.0, 660.0);
    check_page(&s.page, 1000.0, s.ssrc);
    assert!(
        s.page["packets_sent"].as_f64().unwrap_or(0.0) >= 100.0,
        "Chromium sent too few packets: {}",
        s.page
    );
    // Chromium's oscillator, Opus-encoded by libwebrtc, decoded here from ringcast's
    // AudioReceived events: at least a second of it.
    assert!(
        s.received.len() >= 48_000,
        "ringcast decoded only {} samples from Chromium",
        s.received.len()
    );
    let window = &s.received[s.received.len() - 16_384..];
    let hz = dominant_frequency_hz(window, 48_000).expect("a dominant frequency");
    eprintln!("ringcast decoded Chromium's 660 Hz tone as {hz} Hz");
    assert!(
        (hz - 660.0).abs() <= 10.0,
        "ringcast heard {hz} Hz from Chromium's 660 Hz oscillator"
    );
}
