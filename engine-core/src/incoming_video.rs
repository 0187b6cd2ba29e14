//! Other participants' video in a group call (ntgcalls' `add_incoming_video`).
//!
//! Telegram's SFU forwards a participant's video only to the clients that asked for it, over
//! the SCTP data channel on the call's own DTLS transport: the client (SCTP initiator) sends a
//! colibri `ReceiverVideoConstraints` message listing the endpoints it watches
//! (telegram-signaling.md §2.5). [`IncomingVideo`] keeps that list, opens the channel when the
//! first source is added (an audio-only call never starts SCTP), sends the constraints
//! whenever the list changes, lets str0m receive exactly the SSRCs of the added sources and
//! reassembles their frames ([`VideoReceiver`], the same code sfu-mock reads video with).
//!
//! Bounds: at most [`MAX_SOURCES`] sources of at most [`MAX_SSRCS_PER_SOURCE`] media SSRCs;
//! each source's reassembly holds a bounded number of packets and frames
//! (`media::video_rx`). What the SFU says on the channel is parsed and counted; anything
//! malformed is counted and ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use str0m::Rtc;
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::media::{MediaKind, Mid};
use str0m::rtp::Ssrc as StrSsrc;

use crate::media::video_rx::{ReceivedFrame, VideoReceiver};
use crate::signaling::Ssrc;
use crate::signaling::group::SsrcGroup;

/// Sources (endpoints) a call receives video from at most.
pub const MAX_SOURCES: usize = 16;

/// Media SSRCs (simulcast layers) of one source at most.
pub const MAX_SSRCS_PER_SOURCE: usize = 4;

/// The picture height asked for each watched endpoint.
pub const MAX_HEIGHT: u32 = 720;

/// Messages from the SFU longer than this are counted as malformed without being parsed.
const MAX_MESSAGE: usize = 64 * 1024;

/// The mid incoming video streams are received on (never on the wire).
const INCOMING_VIDEO_MID: &str = "vin";

/// The data channel's label (what ntgcalls opens).
const CHANNEL_LABEL: &str = "data";

/// One reassembled frame from another participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedVideo {
    /// The endpoint the application added it under.
    pub endpoint: Arc<str>,
    /// The media SSRC it arrived on (a simulcast layer's).
    pub ssrc: Ssrc,
    /// The frame.
    pub frame: ReceivedFrame,
}

/// Counters of a call's incoming video, in [`crate::CallStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncomingVideoCounters {
    /// Sources added and not removed.
    pub sources: u64,
    /// Video RTP packets received on their SSRCs (RTX repairs folded in).
    pub packets: u64,
    /// Complete, decodable frames handed to the application.
    pub frames: u64,
    /// Of them, key frames.
    pub keyframes: u64,
    /// Frames lost to missing packets or undepacketizable payloads (malformed RTP video).
    pub incomplete_frames: u64,
    /// Frames not handed on: undecodable (no key frame since a loss) or the queue was full.
    pub frames_dropped: u64,
    /// Packets with a payload type that is neither VP8's nor H.264's.
    pub dropped_unknown_pt: u64,
    /// Key frame requests (PLI) sent for incoming video.
    pub plis_sent: u64,
    /// [`IncomingVideo::add`] calls refused: over [`MAX_SOURCES`], or no usable SSRC.
    pub refused_sources: u64,
    /// The data channel is open.
    pub channel_open: bool,
    /// Constraint messages sent on the data channel.
    pub channel_messages_sent: u64,
    /// Messages received on the data channel.
    pub channel_messages_received: u64,
    /// Of them, malformed: not UTF-8 JSON with a `colibriClass`, or oversized.
    pub channel_messages_malformed: u64,
}

/// Why [`IncomingVideo::add`] refused a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IncomingVideoError {
    /// Already [`MAX_SOURCES`] sources.
    #[error("at most {MAX_SOURCES} incoming video sources per call")]
    TooManySources,
    /// The groups name no SSRC (or one of ours).
    #[error("the ssrc groups of endpoint {0:?} name no usable video ssrc")]
    NoSsrc(String),
    /// The endpoint is empty.
    #[error("empty endpoint")]
    EmptyEndpoint,
}

/// One watched endpoint.
#[derive(Debug)]
struct Source {
    endpoint: Arc<str>,
    /// Media SSRC and its RTX SSRC, per layer.
    ssrcs: Vec<(u32, Option<u32>)>,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct IncomingVideo {
    sources: Vec<Source>,
    /// Media SSRC -> its reassembly and the index of its source.
    receivers: HashMap<u32, (usize, VideoReceiver)>,
    /// VP8 and H.264 payload types from the answer, once connected.
    pts: Option<(u8, u8)>,
    /// The str0m streams match `sources` (set false by every change).
    applied: bool,
    channel: Option<ChannelId>,
    channel_open: bool,
    /// The constraints changed since they were last sent.
    constraints_dirty: bool,
    counters: IncomingVideoCounters,
    /// Media SSRCs with a str0m receive stream.
    expected: Vec<u32>,
}

/// The `(media, rtx)` pairs named by `groups`: every FID group's pair; without FID groups, the
/// members of a SIM group (no RTX).
fn layers(groups: &[SsrcGroup]) -> Vec<(u32, Option<u32>)> {
    let mut out: Vec<(u32, Option<u32>)> = groups
        .iter()
        .filter(|g| g.semantics.eq_ignore_ascii_case("FID"))
        .filter_map(|g| Some((g.sources.first()?.0, g.sources.get(1).map(|s| s.0))))
        .collect();
    if out.is_empty() {
        out = groups
            .iter()
            .filter(|g| g.semantics.eq_ignore_ascii_case("SIM"))
            .flat_map(|g| g.sources.iter().map(|s| (s.0, None)))
            .collect();
    }
    out.dedup();
    out.truncate(MAX_SSRCS_PER_SOURCE);
    out
}

impl IncomingVideo {
    /// No sources.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters.
    pub fn counters(&self) -> IncomingVideoCounters {
        let mut c = self.counters;
        c.sources = self.sources.len() as u64;
        c.channel_open = self.channel_open;
        for (_, r) in self.receivers.values() {
            let s = r.stats();
            c.packets += s.packets;
            c.incomplete_frames += s.incomplete_frames;
            c.frames_dropped += s.frames_dropped;
            c.dropped_unknown_pt += s.dropped_unknown_pt;
            c.plis_sent += s.plis_sent;
        }
        c
    }

    /// True if `ssrc` is the media SSRC of an added source.
    pub fn contains(&self, ssrc: u32) -> bool {
        self.receivers.contains_key(&ssrc)
    }

    /// True once any source was added (the data channel is then wanted).
    pub fn wanted(&self) -> bool {
        !self.sources.is_empty() || self.channel.is_some()
    }

    /// Watches `endpoint`, whose video arrives on the SSRCs of `groups` (a participant's
    /// `video.source_groups`). Adding an endpoint again replaces its SSRCs. `own` are our
    /// SSRCs, never accepted.
    ///
    /// # Errors
    /// [`IncomingVideoError`], counted in [`IncomingVideoCounters::refused_sources`].
    pub fn add(
        &mut self,
        endpoint: &str,
        groups: &[SsrcGroup],
        own: &[Option<u32>],
    ) -> Result<(), IncomingVideoError> {
        let result = self.try_add(endpoint, groups, own);
        if result.is_err() {
            self.counters.refused_sources += 1;
        }
        result
    }

    fn try_add(
        &mut self,
        endpoint: &str,
        groups: &[SsrcGroup],
        own: &[Option<u32>],
    ) -> Result<(), IncomingVideoError> {
        if endpoint.is_empty() {
            return Err(IncomingVideoError::EmptyEndpoint);
        }
        let mut ssrcs = layers(groups);
        ssrcs.retain(|(m, _)| !own.contains(&Some(*m)) && *m != 0);
        if ssrcs.is_empty() {
            return Err(IncomingVideoError::NoSsrc(endpoint.to_owned()));
        }
        let existing = self.sources.iter().position(|s| &*s.endpoint == endpoint);
        if existing.is_none() && self.sources.len() >= MAX_SOURCES {
            return Err(IncomingVideoError::TooManySources);
        }
        if existing.is_some() {
            self.remove(endpoint);
        }
        self.sources.push(Source {
            endpoint: Arc::from(endpoint),
            ssrcs,
        });
        self.reindex();
        self.applied = false;
        self.constraints_dirty = true;
        Ok(())
    }

    /// Stops watching `endpoint`. True if it was watched.
    pub fn remove(&mut self, endpoint: &str) -> bool {
        let before = self.sources.len();
        self.sources.retain(|s| &*s.endpoint != endpoint);
        if self.sources.len() == before {
            return false;
        }
        self.reindex();
        self.applied = false;
        self.constraints_dirty = true;
        true
    }

    /// Rebuilds the SSRC index, keeping the reassembly state of SSRCs still watched.
    fn reindex(&mut self) {
        let mut old = std::mem::take(&mut self.receivers);
        for (i, s) in self.sources.iter().enumerate() {
            for &(media, _) in &s.ssrcs {
                let receiver = old.remove(&media).map(|(_, r)| r).unwrap_or_else(|| {
                    let (vp8, h264) = self.pts.unwrap_or((0, 0));
                    VideoReceiver::new(vp8, h264).deliver_frames()
                });
                self.receivers.insert(media, (i, receiver));
            }
        }
    }

    /// The answer's VP8 and H.264 payload types (what packets are read as).
    pub fn set_payload_types(&mut self, vp8: u8, h264: u8) {
        self.pts = Some((vp8, h264));
        for (_, r) in self.receivers.values_mut() {
            *r = VideoReceiver::new(vp8, h264).deliver_frames();
        }
    }

    /// Brings str0m in line: receive streams for exactly the watched SSRCs, SCTP and the data
    /// channel started once there is something to watch, the constraints sent when the
    /// channel is open and they changed. Call after every change and event.
    pub fn apply(&mut self, rtc: &mut Rtc) {
        if !self.applied {
            self.applied = true;
            let mid = Mid::from(INCOMING_VIDEO_MID);
            let mut api = rtc.direct_api();
            let wanted: Vec<(u32, Option<u32>)> = self
                .sources
                .iter()
                .flat_map(|s| s.ssrcs.iter().copied())
                .collect();
            for ssrc in std::mem::take(&mut self.expected) {
                if !wanted.iter().any(|(m, _)| *m == ssrc) {
                    api.remove_stream_rx(StrSsrc::from(ssrc));
                } else {
                    self.expected.push(ssrc);
                }
            }
            if !wanted.is_empty() {
                api.declare_media(mid, MediaKind::Video);
            }
            for (media, rtx) in wanted {
                if !self.expected.contains(&media) {
                    api.expect_stream_rx(StrSsrc::from(media), rtx.map(StrSsrc::from), mid, None);
                    self.expected.push(media);
                }
            }
            if self.channel.is_none() && !self.sources.is_empty() {
                // Telegram's clients are the SCTP initiator (ntgcalls `restartDataChannel`),
                // though the DTLS server toward the SFU.
                api.start_sctp(true);
                self.channel = Some(api.create_data_channel(ChannelConfig {
                    label: CHANNEL_LABEL.to_owned(),
                    ordered: true,
                    ..Default::default()
                }));
            }
        }
        self.send_constraints(rtc);
    }

    /// The colibri message that asks for the watched endpoints (telegram-signaling.md §2.5).
    pub fn constraints_json(&self) -> String {
        let constraints: serde_json::Map<String, serde_json::Value> = self
            .sources
            .iter()
            .map(|s| {
                (
                    s.endpoint.to_string(),
                    serde_json::json!({ "maxHeight": MAX_HEIGHT, "minHeight": 0 }),
                )
            })
            .collect();
        serde_json::json!({
            "colibriClass": "ReceiverVideoConstraints",
            "constraints": constraints,
            "defaultConstraints": { "maxHeight": 0 },
            "onStageEndpoints": [],
        })
        .to_string()
    }

    fn send_constraints(&mut self, rtc: &mut Rtc) {
        let (Some(id), true, true) = (self.channel, self.channel_open, self.constraints_dirty)
        else {
            return;
        };
        let json = self.constraints_json();
        let Some(mut channel) = rtc.channel(id) else {
            return;
        };
        // Not accepted (SCTP buffer full): stays dirty, tried at the next apply.
        if let Ok(true) = channel.write(false, json.as_bytes()) {
            self.constraints_dirty = false;
            self.counters.channel_messages_sent += 1;
        }
    }

    /// The data channel opened.
    pub fn on_channel_open(&mut self, id: ChannelId, rtc: &mut Rtc) {
        if self.channel == Some(id) {
            self.channel_open = true;
            self.constraints_dirty = true;
            self.send_constraints(rtc);
        }
    }

    /// The data channel closed (the SFU closed it): reopened by the next change.
    pub fn on_channel_close(&mut self, id: ChannelId) {
        if self.channel == Some(id) {
            self.channel_open = false;
        }
    }

    /// A message from the SFU on the data channel: counted, and malformed ones counted as
    /// such. (Telegram's SFU sends colibri events such as dominant speaker changes; nothing
    /// here needs them yet.)
    pub fn on_channel_data(&mut self, data: &[u8]) {
        self.counters.channel_messages_received += 1;
        let ok = data.len() <= MAX_MESSAGE
            && serde_json::from_slice::<serde_json::Value>(data)
                .ok()
                .is_some_and(|v| v.get("colibriClass").is_some_and(|c| c.is_string()));
        if !ok {
            self.counters.channel_messages_malformed += 1;
        }
    }

    /// A decrypted video packet of a watched SSRC. Frames it completes are pushed to `out`; a
    /// key frame request goes out through `rtc` when the source needs one.
    pub fn on_rtp(
        &mut self,
        now: Instant,
        rtc: &mut Rtc,
        packet: str0m::rtp::RtpPacket,
        out: &mut impl FnMut(ReceivedVideo),
    ) {
        let ssrc = *packet.header.ssrc;
        let Some((source, receiver)) = self.receivers.get_mut(&ssrc) else {
            return;
        };
        receiver.on_rtp(now, rtc, &packet);
        let endpoint = self.sources.get(*source).map(|s| s.endpoint.clone());
        while let Some(frame) = receiver.take_frame() {
            self.counters.frames += 1;
            self.counters.keyframes += u64::from(frame.keyframe);
            if let Some(endpoint) = &endpoint {
                out(ReceivedVideo {
                    endpoint: endpoint.clone(),
                    ssrc: Ssrc(ssrc),
                    frame,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(semantics: &str, ssrcs: &[u32]) -> SsrcGroup {
        SsrcGroup {
            semantics: semantics.to_owned(),
            sources: ssrcs.iter().map(|s| Ssrc(*s)).collect(),
        }
    }

    #[test]
    fn layers_come_from_fid_groups_or_else_the_sim_group() {
        let sim = group("SIM", &[10, 20, 30]);
        let fids = [group("FID", &[10, 11]), group("FID", &[20, 21])];
        let mut all = vec![sim.clone()];
        all.extend(fids.iter().cloned());
        assert_eq!(layers(&all), [(10, Some(11)), (20, Some(21))]);
        assert_eq!(layers(&[sim]), [(10, None), (20, None), (30, None)]);
        assert!(layers(&[]).is_empty());
    }

    #[test]
    fn sources_are_bounded_and_our_own_ssrcs_refused() {
        let mut v = IncomingVideo::new();
        assert_eq!(
            v.add("", &[group("FID", &[1, 2])], &[]),
            Err(IncomingVideoError::EmptyEndpoint)
        );
        assert_eq!(
            v.add("me", &[group("FID", &[7, 8])], &[Some(7)]),
            Err(IncomingVideoError::NoSsrc("me".to_owned()))
        );
        for i in 0..MAX_SOURCES as u32 {
            v.add(
                &format!("ep{i}"),
                &[group("FID", &[100 + 2 * i, 101 + 2 * i])],
                &[],
            )
            .unwrap();
        }
        assert_eq!(
            v.add("one-more", &[group("FID", &[1, 2])], &[]),
            Err(IncomingVideoError::TooManySources)
        );
        // Adding a watched endpoint again replaces its SSRCs.
        v.add("ep0", &[group("FID", &[5, 6])], &[]).unwrap();
        assert!(v.contains(5) && !v.contains(100));
        assert_eq!(v.counters().sources, MAX_SOURCES as u64);
        assert_eq!(v.counters().refused_sources, 3);
        assert!(v.remove("ep0") && !v.remove("ep0"));
        assert!(!v.contains(5));
    }

    #[test]
    fn constraints_list_every_watched_endpoint_and_nothing_by_default() {
        let mut v = IncomingVideo::new();
        v.add("a", &[group("FID", &[1, 2])], &[]).unwrap();
        v.add("b", &[group("SIM", &[3, 4])], &[]).unwrap();
        let json: serde_json::Value = serde_json::from_str(&v.constraints_json()).unwrap();
        assert_eq!(json["colibriClass"], "ReceiverVideoConstraints");
        assert_eq!(json["constraints"]["a"]["maxHeight"], MAX_HEIGHT);
        assert_eq!(json["constraints"]["b"]["maxHeight"], MAX_HEIGHT);
        assert_eq!(json["defaultConstraints"]["maxHeight"], 0);
        v.remove("a");
        let json: serde_json::Value = serde_json::from_str(&v.constraints_json()).unwrap();
        assert!(json["constraints"].get("a").is_none());
    }

    #[test]
    fn malformed_channel_messages_are_counted() {
        let mut v = IncomingVideo::new();
        v.on_channel_data(br#"{"colibriClass":"DominantSpeakerEndpointChangeEvent"}"#);
        v.on_channel_data(b"\xff\xfe not json");
        v.on_channel_data(br#"{"no":"class"}"#);
        v.on_channel_data(&vec![b' '; MAX_MESSAGE + 1]);
        let c = v.counters();
        assert_eq!(c.channel_messages_received, 4);
        assert_eq!(c.channel_messages_malformed, 3);
    }
}
