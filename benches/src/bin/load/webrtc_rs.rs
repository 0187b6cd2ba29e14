//! The webrtc-rs baseline: one `RTCPeerConnection` per call (webrtc 0.17, the Rust port of
//! pion), joined to the same sfu-mock through the same Telegram group-call JSON.
//!
//! Telegram's roles are the reverse of a browser offer/answer: the SFU is ICE controlling and
//! the DTLS client, the participant ICE controlled and the DTLS server (`setup: passive`). The
//! join payload has to go first, before there is any remote description. So each call:
//!
//! 1. gets its own webrtc-rs `API` whose `SettingEngine` carries ICE credentials we pick, plus a
//!    certificate we generate, so the join payload (ufrag, pwd, fingerprint) is known up front;
//!    the SSRC is the one webrtc-rs picked for the sender of the added track;
//! 2. joins; the SFU's answer is turned into an SDP **offer** (setup `active`, the SFU's ufrag,
//!    pwd, fingerprint, host candidate, Opus PT and extmap ids), and webrtc-rs answers it: the
//!    answerer is ICE controlled and, facing `setup:active`, the DTLS server. Exactly the roles
//!    sfu-mock expects; nothing in sfu-mock changes;
//! 3. once connected, writes the chat's shared Opus frames with `TrackLocalStaticSample` on a
//!    20 ms grid (one tokio timer per call), each with the ssrc-audio-level extension at the id
//!    the answer gave (sfu-mock drops audio without it).
//!
//! ICE gathers host candidates on 127.0.0.1 only (UDP4, loopback allowed, mDNS off, no STUN):
//! one socket per call, like the tokio baseline. The default interceptors are registered (NACK,
//! RTCP reports, TWCC receiver) as a typical webrtc-rs application does.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ringcast::SharedSource;
use ringcast_core::FrameSource;
use ringcast_core::media::{OPUS_CLOCK_RATE_HZ, SharedReader};
use ringcast_core::pacer::LatenessHistogram;
use ringcast_core::signaling::Ssrc;
use ringcast_core::signaling::group::{
    DtlsFingerprint, JoinPayload, JoinResponse, URI_AUDIO_LEVEL,
};
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::dtls_transport::dtls_role::DTLSRole;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample as MediaSample;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::certificate::RTCCertificate;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtp::extension::HeaderExtension as RtpHeaderExtension;
use webrtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;

use crate::sfu::Sfu;
use crate::system::{CHATS, Sample, System, chat_tones};

/// Same send-ahead as the str0m calls (`ringcast_core::call::FRAME_SEND_AHEAD`): a frame within
/// 1 ms of its due time goes now.
const SEND_AHEAD: Duration = ringcast_core::call::FRAME_SEND_AHEAD;
/// Frames more than this many periods behind are skipped rather than burst out (as the str0m
/// calls do).
const MAX_CATCH_UP_FRAMES: u32 = 3;
/// The 20 ms grid.
const FRAME: Duration = Duration::from_millis(20);

/// Frames written and their lateness, for one call.
#[derive(Debug, Default)]
struct CallStats {
    frames: u64,
    lateness: LatenessHistogram,
}

/// The webrtc-rs baseline. See the [module docs](self).
pub(super) struct WebrtcRs {
    /// `Option` only so `Drop` can shut it down without waiting for thousands of tasks.
    runtime: Option<tokio::runtime::Runtime>,
    stats: Vec<Arc<Mutex<CallStats>>>,
    connected: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tones: Vec<SharedSource>,
    calls: usize,
}

impl std::fmt::Debug for WebrtcRs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebrtcRs")
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl WebrtcRs {
    /// A baseline whose tokio runtime has `threads` workers (the shard count ringcast used).
    pub(super) fn new(threads: usize) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            runtime: Some(runtime),
            stats: Vec::new(),
            connected: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
            tones: chat_tones()?,
            calls: 0,
        })
    }
}

impl Drop for WebrtcRs {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A peer connection set up far enough to write the join payload.
struct Prepared {
    pc: Arc<RTCPeerConnection>,
    track: Arc<TrackLocalStaticSample>,
    join: String,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// ICE credentials for call `index`: unique, RFC 8445 ice-chars, 8 and 24 characters.
fn ice_credentials(index: usize) -> (String, String) {
    (
        format!("wr{index:06}"),
        format!("webrtcrsbaseline{index:08}"),
    )
}

/// Builds the peer connection of call `index`, adds its audio track and writes the join
/// payload from our chosen ICE credentials, our certificate and webrtc-rs's sender SSRC.
async fn prepare(
    index: usize,
    connected: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> Result<Prepared, String> {
    let mut media = MediaEngine::default();
    media.register_default_codecs().map_err(err)?;
    media
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: URI_AUDIO_LEVEL.to_owned(),
            },
            RTPCodecType::Audio,
            None,
        )
        .map_err(err)?;
    let registry = register_default_interceptors(Registry::new(), &mut media).map_err(err)?;

    let (ufrag, pwd) = ice_credentials(index);
    let mut settings = SettingEngine::default();
    settings.set_ice_credentials(ufrag.clone(), pwd.clone());
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip: IpAddr| ip.is_loopback()));
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    // The join payload says `setup: passive`: we are the DTLS server whatever the offer says.
    settings
        .set_answering_dtls_role(DTLSRole::Server)
        .map_err(err)?;

    let api = APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build();

    let dtls_cert =
        webrtc::dtls::crypto::Certificate::generate_self_signed(vec!["ringcast-load".to_owned()])
            .map_err(err)?;
    let cert = RTCCertificate::from_existing(
        dtls_cert,
        SystemTime::now() + Duration::from_secs(24 * 3600),
    );
    let fingerprint = cert
        .get_fingerprints()
        .into_iter()
        .next()
        .ok_or("certificate without fingerprint")?;
    let config = RTCConfiguration {
        certificates: vec![cert],
        ..Default::default()
    };
    let pc = Arc::new(api.new_peer_connection(config).await.map_err(err)?);
    let mut counted = false;
    pc.on_peer_connection_state_change(Box::new(move |state| {
        match state {
            // Once per peer connection, even if it flaps.
            RTCPeerConnectionState::Connected if !counted => {
                counted = true;
                connected.fetch_add(1, Ordering::Relaxed);
            }
            RTCPeerConnectionState::Failed => {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        Box::pin(async {})
    }));

    let track = Arc::new(TrackLocalStaticSample::new(
        RTCRtpCodecCapability {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: OPUS_CLOCK_RATE_HZ,
            channels: 2,
            ..Default::default()
        },
        "audio".to_owned(),
        format!("call-{index}"),
    ));
    let sender = pc.add_track(track.clone()).await.map_err(err)?;
    let ssrc = sender
        .get_parameters()
        .await
        .encodings
        .first()
        .map(|e| e.ssrc)
        .ok_or("sender without an encoding")?;

    let join = JoinPayload {
        ufrag,
        pwd,
        fingerprints: vec![DtlsFingerprint {
            hash: fingerprint.algorithm,
            setup: "passive".to_owned(),
            fingerprint: fingerprint.value.to_ascii_uppercase(),
        }],
        ssrc: Ssrc(ssrc),
        ssrc_groups: Vec::new(),
    }
    .to_json();
    Ok(Prepared { pc, track, join })
}

/// The SFU's answer as the SDP offer webrtc-rs answers: the SFU is DTLS client (`setup:active`)
/// and, being the offerer, ICE controlling.
fn offer_sdp(r: &JoinResponse) -> String {
    use std::fmt::Write;
    let t = &r.transport;
    let audio = r.audio.clone().unwrap_or_default();
    let mut pts: Vec<&ringcast_core::signaling::group::PayloadType> = audio
        .payload_types
        .iter()
        .filter(|pt| pt.name.eq_ignore_ascii_case("opus"))
        .collect();
    let default_opus;
    if pts.is_empty() {
        default_opus = ringcast_core::signaling::group::PayloadType {
            id: r.opus_pt(),
            name: "opus".to_owned(),
            clockrate: OPUS_CLOCK_RATE_HZ,
            channels: 2,
            parameters: Vec::new(),
            rtcp_fbs: Vec::new(),
        };
        pts.push(&default_opus);
    }
    let ids: Vec<String> = pts.iter().map(|pt| pt.id.to_string()).collect();
    let mut s = String::with_capacity(1024);
    let _ = write!(
        s,
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
        ids.join(" "),
        t.ufrag,
        t.pwd
    );
    if let Some(fp) = t.fingerprints.first() {
        let _ = write!(s, "a=fingerprint:{} {}\r\n", fp.hash, fp.fingerprint);
    }
    s.push_str("a=setup:active\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n");
    for pt in &pts {
        let _ = write!(
            s,
            "a=rtpmap:{} opus/{}/{}\r\n",
            pt.id,
            if pt.clockrate == 0 {
                OPUS_CLOCK_RATE_HZ
            } else {
                pt.clockrate
            },
            pt.channels.max(1)
        );
        if !pt.parameters.is_empty() {
            let fmtp: Vec<String> = pt
                .parameters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = write!(s, "a=fmtp:{} {}\r\n", pt.id, fmtp.join(";"));
        }
        for fb in &pt.rtcp_fbs {
            match &fb.subtype {
                Some(sub) => {
                    let _ = write!(s, "a=rtcp-fb:{} {} {sub}\r\n", pt.id, fb.kind);
                }
                None => {
                    let _ = write!(s, "a=rtcp-fb:{} {}\r\n", pt.id, fb.kind);
                }
            }
        }
    }
    let mut exts = audio.rtp_hdrexts.clone();
    if !exts.iter().any(|e| e.uri == URI_AUDIO_LEVEL) {
        // The tgcalls id, as the str0m calls fall back to.
        exts.push(ringcast_core::signaling::group::HeaderExtension {
            id: 1,
            uri: URI_AUDIO_LEVEL.to_owned(),
        });
    }
    for e in &exts {
        let _ = write!(s, "a=extmap:{} {}\r\n", e.id, e.uri);
    }
    for c in &t.candidates {
        let foundation = if c.foundation.is_empty() {
            "1"
        } else {
            &c.foundation
        };
        let _ = write!(
            s,
            "a=candidate:{foundation} {} udp {} {} {} typ {}",
            c.component, c.priority, c.ip, c.port, c.kind
        );
        if let Some(rel) = c.rel_addr {
            let _ = write!(s, " raddr {} rport {}", rel.ip(), rel.port());
        }
        s.push_str(" generation 0\r\n");
    }
    s.push_str("a=end-of-candidates\r\n");
    s
}

/// Answers the SFU, waits for the connection, then writes one frame per 20 ms until the end.
async fn run_call(
    pc: Arc<RTCPeerConnection>,
    track: Arc<TrackLocalStaticSample>,
    offer: String,
    mut source: SharedReader,
    stats: Arc<Mutex<CallStats>>,
) {
    let negotiated = async {
        let offer = RTCSessionDescription::offer(offer).map_err(err)?;
        pc.set_remote_description(offer).await.map_err(err)?;
        let answer = pc.create_answer(None).await.map_err(err)?;
        pc.set_local_description(answer).await.map_err(err)
    };
    if let Err(e) = negotiated.await {
        eprintln!("webrtc-rs: negotiation failed: {e}");
        return;
    }
    // Frames start once DTLS-SRTP is up (the str0m calls also start at Connected).
    loop {
        match pc.connection_state() {
            RTCPeerConnectionState::Connected => break,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => return,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let mut due = Instant::now();
    loop {
        tokio::time::sleep_until(tokio::time::Instant::from_std(due - SEND_AHEAD)).await;
        let now = Instant::now();
        let behind = (now.saturating_duration_since(due).as_micros() / FRAME.as_micros()) as u32;
        if behind > MAX_CATCH_UP_FRAMES {
            due += FRAME * (behind - MAX_CATCH_UP_FRAMES);
        }
        while due <= Instant::now() + SEND_AHEAD {
            let Ok(Some(frame)) = source.next_frame() else {
                return;
            };
            let duration = Duration::from_micros(
                u64::from(frame.duration_samples) * 1_000_000 / u64::from(OPUS_CLOCK_RATE_HZ),
            );
            let sample = MediaSample {
                data: bytes::Bytes::copy_from_slice(&frame.data),
                duration,
                ..Default::default()
            };
            let level = [RtpHeaderExtension::AudioLevel(AudioLevelExtension {
                level: frame.audio_level,
                voice: frame.voice_activity,
            })];
            // Lateness: when the frame is handed to webrtc-rs against its slot on the grid.
            let lateness = Instant::now().saturating_duration_since(due);
            if let Ok(mut s) = stats.lock() {
                s.frames += 1;
                s.lateness.record(lateness);
            }
            if track
                .write_sample_with_extensions(&sample, &level)
                .await
                .is_err()
            {
                return;
            }
            due += duration.max(Duration::from_millis(1));
        }
    }
}

impl System for WebrtcRs {
    fn name(&self) -> &'static str {
        "webrtc_rs"
    }

    fn grow_to(&mut self, n: usize, sfu: &Sfu) -> Result<(), String> {
        let runtime = self.runtime.as_ref().ok_or("runtime gone")?;
        while self.calls < n {
            let index = self.calls;
            let chat = index % CHATS;
            let prepared =
                runtime.block_on(prepare(index, self.connected.clone(), self.failed.clone()))?;
            let answer = sfu.join(chat, &prepared.join)?;
            let response = JoinResponse::parse(answer.as_bytes()).map_err(err)?;
            let stats = Arc::new(Mutex::new(CallStats::default()));
            self.stats.push(stats.clone());
            runtime.spawn(run_call(
                prepared.pc,
                prepared.track,
                offer_sdp(&response),
                self.tones[chat].reader(),
                stats,
            ));
            self.calls += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while (self.connected.load(Ordering::Relaxed) as usize) < n {
            let failed = self.failed.load(Ordering::Relaxed);
            if Instant::now() > deadline || failed > 0 {
                let connected = self.connected.load(Ordering::Relaxed);
                let msg = format!("{connected}/{n} connected, {failed} failed");
                if connected == 0 {
                    // Nothing ever connected: interop is broken, not the stack overloaded.
                    return Err(format!("webrtc-rs: {msg}"));
                }
                // Overload: measure the step anyway; it is not good (connected < calls), so
                // the ramp stops there with the earlier steps kept.
                eprint!("({msg}) ");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn sample(&self) -> Sample {
        let connected = self.connected.load(Ordering::Relaxed) as usize;
        // Each call's counters are copied out under its own lock, then summed.
        let calls: Vec<(u64, LatenessHistogram)> = self
            .stats
            .iter()
            .filter_map(|call| call.lock().ok().map(|c| (c.frames, c.lateness.clone())))
            .collect();
        Sample::sum(connected, calls.iter().map(|(p, l)| (*p, l)))
    }
}
