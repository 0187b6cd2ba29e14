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
//! Video: the page also offers a recvonly video transceiver (`bundlePolicy: "max-bundle"`);
//! the response JSON gets a `video` section with the payload types Chromium offered for VP8
//! (or H.264 packetization-mode=1, 42e01f) and their RTX, and the answer an m=video section
//! bundled with the audio one, with ringcast's camera and RTX SSRCs (`a=ssrc-group:FID`,
//! `a=ssrc`): ringcast sends no MID header extension, Chromium maps the stream by SSRC.
//! ringcast shows a 1280x720 pattern made with ffmpeg (two known colours and a moving
//! corner); the page decodes it (`framesDecoded`, `frameWidth`/`frameHeight` from
//! `getStats()`), draws the `<video>` on a canvas and reads pixels of the known regions.
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
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use ringcast::{
    CallOptions, CallState, Engine, EventKind, MediaSource, StreamSource, VideoCodec, VideoParams,
};
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

/// A video payload type Chromium offered and its RTX payload type (`apt=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VideoPt {
    pt: u8,
    rtx: u8,
}

/// What the test needs from Chromium's offer.
#[derive(Debug, Default)]
struct Offer {
    ufrag: String,
    pwd: String,
    sha256: String,
    /// The audio m-section's mid.
    mid: String,
    /// The video m-section's mid, when the page offered video.
    video_mid: Option<String>,
    opus_pt: Option<u8>,
    audio_level_id: Option<u8>,
    /// VP8 in the video m-section.
    vp8: Option<VideoPt>,
    /// H.264 Constrained Baseline 3.1 (`42e01f`) in packetization mode 1.
    h264: Option<VideoPt>,
    /// (foundation, priority, ip, port) of udp host candidates on 127.0.0.1.
    loopback: Vec<(String, u32, String, u16)>,
    /// The audio m-section is sendrecv (Chromium sends a tone too).
    sendrecv: bool,
}

impl Offer {
    /// The offered payload types of `codec`.
    fn video_pt(&self, codec: VideoCodec) -> Option<VideoPt> {
        match codec {
            VideoCodec::Vp8 => self.vp8,
            VideoCodec::H264 => self.h264,
            _ => None,
        }
    }
}

fn parse_offer(sdp: &str) -> Offer {
    #[derive(PartialEq)]
    enum Section {
        Session,
        Audio,
        Video,
        Other,
    }
    let mut o = Offer::default();
    let mut section = Section::Session;
    // Video section: pt -> (encoding name, fmtp parameters).
    let mut video_pts: Vec<(u8, String, String)> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            section = match m.split_whitespace().next() {
                Some("audio") => Section::Audio,
                Some("video") => Section::Video,
                _ => Section::Other,
            };
            continue;
        }
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            set_once(&mut o.ufrag, v);
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            set_once(&mut o.pwd, v);
        } else if let Some(v) = line.strip_prefix("a=fingerprint:sha-256 ") {
            set_once(&mut o.sha256, v.trim());
        } else if let Some(v) = line.strip_prefix("a=mid:") {
            match section {
                Section::Audio => o.mid = v.to_owned(),
                Section::Video => o.video_mid = Some(v.to_owned()),
                _ => {}
            }
        } else if line == "a=sendrecv" && section == Section::Audio {
            o.sendrecv = true;
        } else if let Some(v) = line.strip_prefix("a=rtpmap:") {
            let mut f = v.split_whitespace();
            let pt = f.next().and_then(|p| p.parse::<u8>().ok());
            let name = f.next().and_then(|n| n.split('/').next()).unwrap_or("");
            match (section == Section::Audio, section == Section::Video, pt) {
                (true, _, Some(pt)) if v.to_ascii_lowercase().contains("opus/48000") => {
                    o.opus_pt = Some(pt);
                }
                (_, true, Some(pt)) => video_pts.push((pt, name.to_owned(), String::new())),
                _ => {}
            }
        } else if let Some(v) = line.strip_prefix("a=fmtp:") {
            if section == Section::Video
                && let Some((pt, params)) = v.split_once(' ')
                && let Ok(pt) = pt.parse::<u8>()
                && let Some(entry) = video_pts.iter_mut().find(|e| e.0 == pt)
            {
                entry.2 = params.to_owned();
            }
        } else if let Some(v) = line.strip_prefix("a=extmap:") {
            if section == Section::Audio && v.contains(AUDIO_LEVEL_URI) {
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
                let c = (f[0].to_owned(), priority, f[4].to_owned(), port);
                // max-bundle: one transport, its candidates possibly repeated per section.
                if !o.loopback.contains(&c) {
                    o.loopback.push(c);
                }
            }
        }
    }
    let fmtp_has = |params: &str, key: &str, value: &str| {
        params.split(';').any(|kv| {
            kv.trim()
                .split_once('=')
                .is_some_and(|(k, v)| k.eq_ignore_ascii_case(key) && v.eq_ignore_ascii_case(value))
        })
    };
    let rtx_for = |pt: u8| {
        video_pts
            .iter()
            .find(|(_, name, params)| {
                name.eq_ignore_ascii_case("rtx") && fmtp_has(params, "apt", &pt.to_string())
            })
            .map(|e| e.0)
    };
    let pick = |ok: &dyn Fn(&str, &str) -> bool| {
        video_pts
            .iter()
            .filter(|(_, name, params)| ok(name, params))
            .find_map(|(pt, _, _)| rtx_for(*pt).map(|rtx| VideoPt { pt: *pt, rtx }))
    };
    o.vp8 = pick(&|name, _| name.eq_ignore_ascii_case("VP8"));
    o.h264 = pick(&|name, params| {
        name.eq_ignore_ascii_case("H264")
            && fmtp_has(params, "packetization-mode", "1")
            && fmtp_has(params, "profile-level-id", "42e01f")
    });
    o
}

/// Sets `field` unless set: with max-bundle every m-section repeats the transport's
/// attributes, the first one counts.
fn set_once(field: &mut String, v: &str) {
    if field.is_empty() {
        v.clone_into(field);
    }
}

/// The Telegram SFU's response (`updateGroupCallConnection.params.data`) describing Chromium;
/// with `video`, a `video` section with the payload types Chromium offered for it.
fn response_json(
    offer: &Offer,
    level_id: u8,
    video: Option<(VideoCodec, VideoPt)>,
) -> serde_json::Value {
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
    let mut response = serde_json::json!({
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
    });
    if let Some((codec, VideoPt { pt, rtx })) = video {
        let fbs = serde_json::json!([
            {"type": "ccm", "subtype": "fir"}, {"type": "nack"}, {"type": "nack", "subtype": "pli"},
        ]);
        let mut main = serde_json::json!({
            "id": pt, "name": codec.rtp_name(), "clockrate": 90000, "rtcp-fbs": fbs,
        });
        if codec == VideoCodec::H264 {
            main["parameters"] = serde_json::json!({
                "level-asymmetry-allowed": 1, "packetization-mode": 1,
                "profile-level-id": "42e01f",
            });
        }
        response["video"] = serde_json::json!({
            "payload-types": [
                main,
                {"id": rtx, "name": "rtx", "clockrate": 90000, "parameters": {"apt": pt}},
            ],
            "rtp-hdrexts": [],
        });
    }
    response
}

/// ringcast's camera track as Chromium must know it: codec, payload types, SSRCs.
#[derive(Debug, Clone, Copy)]
struct VideoAnswer {
    codec: VideoCodec,
    pts: VideoPt,
    /// The camera track's SSRC and its RTX SSRC (the join payload's FID group).
    ssrc: u32,
    rtx_ssrc: u32,
}

/// The answer SDP Chromium gets: ringcast's side of the call, from its join payload. With
/// `video`, an m=video section bundled with the audio one: ringcast sends no MID header
/// extension, so Chromium maps the camera track by its `a=ssrc` lines (and the RTX stream by
/// the FID group).
fn answer_sdp(
    join: &serde_json::Value,
    offer: &Offer,
    level_id: u8,
    engine: SocketAddr,
    video: Option<VideoAnswer>,
) -> String {
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
    let ufrag = join["ufrag"].as_str().expect("ufrag");
    let pwd = join["pwd"].as_str().expect("pwd");
    let bundle = match (&video, &offer.video_mid) {
        (Some(_), Some(vmid)) => format!("a=group:BUNDLE {mid} {vmid}"),
        _ => format!("a=group:BUNDLE {mid}"),
    };
    // What every media section says of the one (bundled) transport: ringcast's ICE
    // credentials and fingerprint, passive so Chromium is the DTLS client.
    let transport = |mid: &str| {
        [
            "c=IN IP4 0.0.0.0".to_owned(),
            "a=rtcp:9 IN IP4 0.0.0.0".to_owned(),
            format!("a=ice-ufrag:{ufrag}"),
            format!("a=ice-pwd:{pwd}"),
            format!("a=fingerprint:sha-256 {fp}"),
            "a=setup:passive".to_owned(),
            format!("a=mid:{mid}"),
        ]
    };
    let mut lines = vec![
        "v=0".to_owned(),
        "o=- 1 1 IN IP4 127.0.0.1".to_owned(),
        "s=-".to_owned(),
        "t=0 0".to_owned(),
        bundle,
        "a=msid-semantic: WMS ringcast".to_owned(),
        "m=audio 9 UDP/TLS/RTP/SAVPF 111".to_owned(),
    ];
    lines.extend(transport(mid));
    lines.extend([
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
    ]);
    if let (Some(v), Some(vmid)) = (video, &offer.video_mid) {
        let VideoPt { pt, rtx } = v.pts;
        lines.push(format!("m=video 9 UDP/TLS/RTP/SAVPF {pt} {rtx}"));
        lines.extend(transport(vmid));
        lines.extend([
            // Chromium offered recvonly: ringcast sends.
            "a=sendonly".to_owned(),
            "a=rtcp-mux".to_owned(),
            "a=rtcp-rsize".to_owned(),
            format!("a=rtpmap:{pt} {}/90000", v.codec.rtp_name()),
            format!("a=rtcp-fb:{pt} ccm fir"),
            format!("a=rtcp-fb:{pt} nack"),
            format!("a=rtcp-fb:{pt} nack pli"),
        ]);
        if v.codec == VideoCodec::H264 {
            lines.push(format!(
                "a=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            ));
        }
        lines.extend([
            format!("a=rtpmap:{rtx} rtx/90000"),
            format!("a=fmtp:{rtx} apt={pt}"),
            format!("a=ssrc-group:FID {} {}", v.ssrc, v.rtx_ssrc),
            format!("a=ssrc:{} cname:ringcast", v.ssrc),
            format!("a=ssrc:{} msid:ringcast video", v.ssrc),
            format!("a=ssrc:{} cname:ringcast", v.rtx_ssrc),
            format!("a=ssrc:{} msid:ringcast video", v.rtx_ssrc),
        ]);
    }
    lines.push(String::new());
    lines.join("\r\n")
}

/// What one session measured on both sides.
struct Session {
    /// ringcast's audio SSRC.
    ssrc: u32,
    /// ringcast's camera track SSRC, in a session with video.
    video_ssrc: Option<u32>,
    /// The page's result JSON.
    page: serde_json::Value,
    /// Mono PCM ringcast received from Chromium (empty unless Chromium sent a tone).
    received: Vec<f32>,
    /// Video frames ringcast had sent when the page's result came.
    video_frames_sent: u64,
}

/// The camera track of a session: `file` encoded as `codec` at 1280x720, 30 fps.
struct VideoSetup<'a> {
    codec: VideoCodec,
    file: &'a std::path::Path,
    /// Canvas points the page samples (x, y in the 1280x720 picture).
    samples: &'a [(u32, u32)],
}

/// One session at a time: Chromium decoding 720p and ffmpeg encoding it share 2 cores with
/// the rest of the machine; sessions in parallel would starve each other's deadlines.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One call: ringcast plays `ringcast_hz` into Chromium; if `chromium_hz > 0` Chromium plays
/// that back and ringcast decodes it; with `video`, ringcast also shows the file on its camera
/// track and the page decodes it.
fn session(
    chat: i64,
    ringcast_hz: f32,
    chromium_hz: f32,
    video: Option<VideoSetup<'_>>,
) -> Session {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let started = Instant::now();
    let deadline = started + SESSION_LIMIT;
    let engine = Engine::builder()
        .shards(1)
        .receive_audio(chromium_hz > 0.0)
        .build()
        .unwrap();
    let options = match &video {
        Some(v) => CallOptions::new().video(v.codec),
        None => CallOptions::new(),
    };
    let join_text = engine.create_call_with(chat, options).unwrap();
    let join: serde_json::Value = serde_json::from_str(&join_text).unwrap();
    let our_ssrc = engine.audio_ssrc(chat).unwrap();
    // The FID group: camera track and its RTX stream (signed int32 in the payload).
    let video_ssrcs = video.as_ref().map(|_| {
        let sources: Vec<u32> = join["ssrc-groups"][0]["sources"]
            .as_array()
            .unwrap_or_else(|| panic!("no ssrc-groups in a video call's payload: {join}"))
            .iter()
            .map(|v| v.as_i64().expect("an ssrc") as u32)
            .collect();
        assert_eq!(join["ssrc-groups"][0]["semantics"], "FID", "{join}");
        assert_eq!(sources.len(), 2, "{join}");
        (sources[0], sources[1])
    });

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let params = serde_json::json!({
        "send_hz": chromium_hz,
        "record_ms": 3000,
        "video": video.is_some(),
        "video_samples": video.as_ref().map(|v| v.samples).unwrap_or_default(),
    })
    .to_string();
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
                let video_answer = video
                    .as_ref()
                    .zip(video_ssrcs)
                    .map(|(v, (ssrc, rtx_ssrc))| {
                        assert!(
                            offer.video_mid.is_some(),
                            "Chromium offered no video:\n{sdp}"
                        );
                        let pts = offer.video_pt(v.codec).unwrap_or_else(|| {
                            panic!("Chromium offered no {} with rtx:\n{sdp}", v.codec)
                        });
                        eprintln!("Chromium's {} payload types: {pts:?}", v.codec);
                        VideoAnswer {
                            codec: v.codec,
                            pts,
                            ssrc,
                            rtx_ssrc,
                        }
                    });
                let response =
                    response_json(&offer, level_id, video_answer.map(|v| (v.codec, v.pts)));
                engine.connect(chat, &response.to_string()).unwrap();
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
                let _ = reply.send(answer_sdp(
                    &join,
                    &offer,
                    level_id,
                    engine_addr,
                    video_answer,
                ));
                // After the answer: this waits for the encoder's first frame.
                if let Some(v) = &video {
                    let params = VideoParams {
                        codec: v.codec,
                        ..VideoParams::default()
                    };
                    engine
                        .set_video_source(chat, MediaSource::file(v.file), params)
                        .unwrap();
                }
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
        video_ssrc: video_ssrcs.map(|(v, _)| v),
        page,
        received,
        video_frames_sent: info.stats.video.frames_sent,
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
    let s = session(1, 440.0, 0.0, None);
    check_page(&s.page, 440.0, s.ssrc);
    assert!(
        s.received.is_empty(),
        "Chromium sent nothing, yet ringcast received audio"
    );
}

#[test]
fn chromium_and_ringcast_hear_each_other() {
    // Another pitch than above: the measurement follows the tone, it is not a constant.
    let s = session(2, 1000.0, 660.0, None);
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

/// The left half of the test pattern (sRGB): orange-red.
const LEFT: [u8; 3] = [0xF0, 0x30, 0x20];
/// The right half: blue.
const RIGHT: [u8; 3] = [0x30, 0x50, 0xF0];
/// Where the page samples: the middle of the lower left quarter (the moving `testsrc2`
/// corner is the upper left 320x180) and the middle of the right half.
const SAMPLES: [(u32, u32); 2] = [(320, 540), (960, 360)];
/// Largest difference per channel between a sampled pixel and the pattern's colour there: YUV
/// rounding and the encoders' quantization (measured: at most 2 for VP8 and, with the stream's
/// colour description that ringcast's ffmpeg writes (BT.601), for H.264 too; an untagged H.264
/// stream was read as BT.709 and came out 18 off). The two halves differ by 190 in red and
/// blue: a wrong region, a black or a garbled picture are far outside.
const PIXEL_TOLERANCE: i32 = 8;

/// A directory for the session's media, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ringcast-chromium-video-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A 1280x720, 30 fps, 30 s pattern made with ffmpeg: [`LEFT`] on the left half, [`RIGHT`] on
/// the right, a moving 320x180 `testsrc2` in the upper left corner (every frame differs).
fn pattern(dir: &TempDir) -> PathBuf {
    let out = dir.0.join("pattern.mp4");
    let hex = |c: [u8; 3]| format!("0x{:02X}{:02X}{:02X}", c[0], c[1], c[2]);
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "color=c={}:size=1280x720:rate=30:duration=30",
            hex(LEFT)
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "color=c={}:size=640x720:rate=30:duration=30",
            hex(RIGHT)
        ))
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=30:duration=30",
        ])
        .args([
            "-filter_complex",
            "[0][1]overlay=640:0[lr];[lr][2]overlay=0:0,format=yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "10",
        ])
        .arg(&out)
        .status()
        .expect("ffmpeg is installed (scripts/setup.sh)");
    assert!(status.success(), "ffmpeg could not make {}", out.display());
    out
}

/// Chromium decoded ringcast's camera track: the right codec and SSRC, frames decoded and
/// still growing, about every frame ringcast sent (`frames_sent`), key frames, 1280x720, and
/// the pattern's colours on the canvas.
fn check_video(page: &serde_json::Value, codec: VideoCodec, ssrc: u32, frames_sent: u64) {
    let v = &page["video"];
    assert!(v.get("error").is_none(), "{v}");
    let get = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}"));
    eprintln!(
        "Chromium decoded {codec}: framesDecoded {} -> {} (2 s apart; ringcast sent {frames_sent}), \
         keyFramesDecoded {}, {}x{} (element {}x{}), {} fps, decoder {}, pixels {} \
         (expected {LEFT:?}, {RIGHT:?})",
        v["frames_decoded_first"],
        v["frames_decoded"],
        v["key_frames_decoded"],
        v["frame_width"],
        v["frame_height"],
        v["element_width"],
        v["element_height"],
        v["frames_per_second"],
        v["decoder_implementation"],
        v["pixels"],
    );
    assert_eq!(v["ssrc"], ssrc, "Chromium decoded another SSRC: {v}");
    let mime = v["mime_type"].as_str().unwrap_or_default();
    assert!(
        mime.eq_ignore_ascii_case(&format!("video/{}", codec.rtp_name())),
        "codec {mime}: {v}"
    );
    let (first, last) = (get("frames_decoded_first"), get("frames_decoded"));
    assert!(first >= 30.0, "{v}");
    // Decoding goes on: two seconds are 60 frames at 30 fps; at least 10 (5 fps) more, as
    // the encoder runs slower than real time on a loaded machine (the next check covers
    // that Chromium keeps up with what ringcast sent).
    assert!(
        last - first >= 10.0,
        "framesDecoded grew only {first} -> {last}: {v}"
    );
    // Every frame sent was decoded, but for those in flight after the page's last getStats
    // (the test reads ringcast's count once the result arrived).
    assert!(
        last + 10.0 >= frames_sent as f64,
        "Chromium decoded {last} frames, ringcast sent {frames_sent}: {v}"
    );
    assert!(get("key_frames_decoded") >= 1.0, "{v}");
    assert_eq!(
        (get("frame_width"), get("frame_height")),
        (1280.0, 720.0),
        "{v}"
    );
    assert_eq!(
        (get("element_width"), get("element_height")),
        (1280.0, 720.0),
        "{v}"
    );
    let pixels = v["pixels"]
        .as_array()
        .unwrap_or_else(|| panic!("no pixels: {v}"));
    assert_eq!(pixels.len(), 2, "{v}");
    for (pixel, want) in pixels.iter().zip([LEFT, RIGHT]) {
        let got: Vec<i32> = pixel
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_i64().unwrap() as i32)
            .collect();
        let off = |want: [u8; 3]| {
            got.iter()
                .zip(want)
                .map(|(g, w)| (g - i32::from(w)).abs())
                .max()
                .unwrap()
        };
        let (expected, how) = (want, "as in the pattern");
        eprintln!(
            "{codec} pixel {got:?}: pattern {want:?}, {how} {expected:?}, off by {}",
            off(expected)
        );
        assert!(
            off(expected) <= PIXEL_TOLERANCE,
            "pixel {got:?}, expected {expected:?} ({how}; pattern {want:?}): off by {} > \
             {PIXEL_TOLERANCE}: {v}",
            off(expected)
        );
    }
}

/// ringcast shows the pattern as `codec` and plays a tone; Chromium decodes both.
fn chromium_decodes(chat: i64, codec: VideoCodec, tone_hz: f32) {
    let dir = TempDir::new(&codec.to_string());
    let file = pattern(&dir);
    let s = session(
        chat,
        tone_hz,
        0.0,
        Some(VideoSetup {
            codec,
            file: &file,
            samples: &SAMPLES,
        }),
    );
    check_page(&s.page, f64::from(tone_hz), s.ssrc);
    check_video(
        &s.page,
        codec,
        s.video_ssrc.expect("a video session"),
        s.video_frames_sent,
    );
}

#[test]
fn chromium_as_sfu_decodes_ringcast_vp8() {
    chromium_decodes(3, VideoCodec::Vp8, 523.0);
}

#[test]
fn chromium_as_sfu_decodes_ringcast_h264() {
    chromium_decodes(4, VideoCodec::H264, 587.0);
}
