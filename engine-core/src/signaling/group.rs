//! Group calls (voice chats): the join payload and the SFU answer.
//!
//! A client joins with [`JoinPayload`] as the `params` of `phone.joinGroupCall` and receives a
//! [`JoinResponse`] in `updateGroupCallConnection.params` (telegram-signaling.md §1-§3; shapes
//! from tgcalls `tgcalls/group/GroupJoinPayloadInternal.cpp` and ntgcalls
//! `wrtc/src/models/response_payload.cpp`). Both types parse and emit, so the same code serves the
//! client (ringcast) and the SFU side (sfu-mock, tests).
//!
//! # Lenient where Telegram is inconsistent, strict where it matters
//!
//! The reference parsers disagree on JSON types (tgcalls wants every candidate field as a string,
//! ntgcalls wants payload-type ids as numbers), so [`JoinResponse::parse`] accepts:
//!
//! - every integer as a JSON number **or** a decimal string (`"32001"` and `32001`);
//! - payload-type `parameters` values as strings or numbers (numbers are stringified);
//! - `rtcp-fbs` entries as `{"type": "nack", "subtype": "pli"}`, `{"type": "nack pli"}` or the
//!   bare string `"nack pli"`;
//! - candidate `type` `"local"` as `"host"`; unknown keys, `xmlns` and `rtcp-mux` are ignored;
//! - candidates whose `protocol` is not `udp` (e.g. `tcp`; ringcast reaches the SFU over UDP
//!   only) are **skipped**, not rejected; nothing but their `protocol` is read.
//!
//! It rejects, naming the JSON path in the [`SignalingError`]: a missing `ufrag`, `pwd`,
//! `fingerprints` or `candidates`; a fingerprint that is not colon-separated hex of the size its
//! hash implies; an unparsable ip; port 0 or above 65535; a negative or overflowing number; a
//! payload type above 127; a header-extension id outside 1..=14 (RFC 8285 one-byte form); a
//! duplicate payload-type or extension id within a section; a candidate `type` other than
//! host/local/srflx/prflx/relay; and any list longer than [`MAX_LIST_ITEMS`]. A `null` value
//! counts as absent.
//!
//! Parsing goes through [`serde_json::Value`] by hand rather than `serde` derives so that every
//! error can name its path, e.g. `transport.candidates[1].port` (the helpers are shared with the
//! 1:1-call messages in `signaling::json`).

use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value};

use super::json::{
    self, Array, ICE_CREDENTIAL_MAX_CHARS, Object, Path, Quoted, Raw, array, check_fingerprint,
    check_ice_credential, hex_byte, integer, ip_addr, object, optional, optional_integer,
    optional_text, quoted, required, required_str, ssrc, string, text, too_many, type_name,
};
use super::{SignalingError, Ssrc, parse_document};
use crate::media::video::VideoCodec;

/// Opus payload type Telegram uses for group-call audio.
///
/// tgcalls hardcodes 111 (`GroupInstanceCustomImpl.cpp`) and ntgcalls treats PT 111 with an
/// unknown SSRC as a new speaker (telegram-signaling.md §2.6, §3). Used when the answer has no
/// `audio` section or no `opus` entry in it.
pub const OPUS_DEFAULT_PT: u8 = 111;

/// RFC 6464 client-to-mixer audio level extension; the SFU uses it for speaker selection
/// (telegram-signaling.md §3).
pub const URI_AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Absolute send time extension (webrtc.org experiment used by libwebrtc for REMB bandwidth
/// estimation; telegram-signaling.md §3).
pub const URI_ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";

/// Transport-wide sequence number extension for transport-cc congestion control
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01; telegram-signaling.md §3).
pub const URI_TRANSPORT_CC: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Header-extension id of [`URI_AUDIO_LEVEL`] when the answer does not say: tgcalls hardcodes 1
/// for group-call audio (telegram-signaling.md §3).
pub const AUDIO_LEVEL_DEFAULT_ID: u8 = 1;

/// Header-extension id of [`URI_ABS_SEND_TIME`] when the answer does not say (tgcalls hardcodes
/// 2; telegram-signaling.md §3).
pub const ABS_SEND_TIME_DEFAULT_ID: u8 = 2;

/// Header-extension id of [`URI_TRANSPORT_CC`] when the answer does not say (tgcalls hardcodes 3;
/// telegram-signaling.md §3).
pub const TRANSPORT_CC_DEFAULT_ID: u8 = 3;

/// Most items any list in a group-call document may hold (candidates, payload types, header
/// extensions, fingerprints, SSRC groups, parameters...).
///
/// Real answers have 2-4 candidates and fewer than 10 payload types; the cap bounds the work and
/// memory an adversarial document can cause beyond the [`super::MAX_SIGNALING_BYTES`] limit.
pub const MAX_LIST_ITEMS: usize = json::MAX_LIST_ITEMS;

/// Jingle namespace Telegram puts in `transport.xmlns`; informational only, emitted for fidelity.
const XMLNS_ICE_UDP: &str = "urn:xmpp:jingle:transports:ice-udp:1";

/// Shortest ICE ufrag, RFC 8445 §5.3.
const ICE_UFRAG_MIN_CHARS: usize = 4;

/// Shortest ICE password, RFC 8445 §5.3 (128 bits of randomness as 22 base64-like chars).
const ICE_PWD_MIN_CHARS: usize = 22;

/// Largest ICE component id, RFC 8445 §5.1.1.1 ("between 1 and 256").
const ICE_COMPONENT_MAX: u16 = 256;

/// Largest RTP payload type: the PT field is 7 bits (RFC 3550 §5.1).
const PAYLOAD_TYPE_MAX: u8 = 127;

/// Valid one-byte-header extension ids, RFC 8285 §4.2 (0 is padding, 15 is reserved).
const HEADER_EXTENSION_IDS: (u8, u8) = (1, 14);

/// One DTLS certificate fingerprint (RFC 8122 `a=fingerprint` + `a=setup`, in JSON form).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DtlsFingerprint {
    /// Hash function name as in RFC 8122, e.g. `"sha-256"`.
    pub hash: String,
    /// DTLS role the sender announces: `"passive"` in join payloads, `"active"` from the SFU.
    /// Empty when the sender omitted it (allowed in both documents; nobody reads the SFU's).
    pub setup: String,
    /// Hex bytes joined by `:`, e.g. `"4A:1F:..:9C"` (RFC 8122 §5); parsing accepts either case
    /// and checks the byte count against `hash` when the hash name is known.
    pub fingerprint: String,
}

/// A set of SSRCs with a grouping semantic (RFC 5576 `a=ssrc-group`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SsrcGroup {
    /// `"SIM"` (simulcast layers, lowest first) or `"FID"` (media SSRC and its RTX SSRC).
    pub semantics: String,
    /// Members of the group, in the order the semantics require. Never empty when parsed.
    pub sources: Vec<Ssrc>,
}

/// What a client sends in `phone.joinGroupCall` `params.data` (telegram-signaling.md §1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JoinPayload {
    /// Local ICE username fragment (RFC 8445 ice-chars, 4..=256 of them).
    pub ufrag: String,
    /// Local ICE password (RFC 8445 ice-chars, 22..=256 of them).
    pub pwd: String,
    /// Local DTLS certificate fingerprints; both reference clients send exactly one.
    pub fingerprints: Vec<DtlsFingerprint>,
    /// SSRC of the outgoing Opus stream.
    pub ssrc: Ssrc,
    /// Video SSRC groups (SIM + FID); empty for audio-only, and then omitted from the JSON.
    pub ssrc_groups: Vec<SsrcGroup>,
}

impl JoinPayload {
    /// Serializes to the §1 JSON shape: keys `ufrag`, `pwd`, `fingerprints`, `ssrc` and, when
    /// non-empty, `ssrc-groups`; SSRCs as signed 32-bit numbers (bit-cast), as Telegram expects.
    pub fn to_json(&self) -> String {
        json::emit(256, |o| {
            o.field("ufrag", &self.ufrag)
                .field("pwd", &self.pwd)
                .array("fingerprints", |a| {
                    write_fingerprints(a, &self.fingerprints)
                })
                .field("ssrc", self.ssrc.as_i32_bits());
            if !self.ssrc_groups.is_empty() {
                o.array("ssrc-groups", |a| {
                    for group in &self.ssrc_groups {
                        a.object(|o| {
                            o.field("semantics", &group.semantics)
                                .array("sources", |a| write_ssrcs(a, &group.sources));
                        });
                    }
                });
            }
        })
    }

    /// Parses a join payload, as the SFU side does.
    ///
    /// Requires `ufrag` and `pwd` made of RFC 8445 ice-chars within RFC length limits, at least
    /// one fingerprint with `hash` and a well-formed `fingerprint` (`setup` optional), and `ssrc`
    /// as a number or decimal string in the signed *or* unsigned 32-bit range. `ssrc-groups` may
    /// be absent, `null` or `[]`; each group needs a non-empty `semantics` and `sources`.
    /// Unknown keys are ignored.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignalingError> {
        let doc = parse_document(bytes)?;
        let root = Path::Root;
        let obj = object(&doc, &root)?;

        let ufrag = required_str(obj, &root, "ufrag")?;
        check_ice_credential(ufrag, &root.key("ufrag"), ICE_UFRAG_MIN_CHARS)?;
        let pwd = required_str(obj, &root, "pwd")?;
        check_ice_credential(pwd, &root.key("pwd"), ICE_PWD_MIN_CHARS)?;
        let fingerprints = parse_fingerprints(obj, &root)?;
        let ssrc = ssrc(required(obj, &root, "ssrc")?, &root.key("ssrc"))?;

        let mut ssrc_groups = Vec::new();
        let groups_at = root.key("ssrc-groups");
        if let Some(groups) = optional(obj, "ssrc-groups") {
            for (i, group) in array(groups, &groups_at)?.iter().enumerate() {
                ssrc_groups.push(parse_ssrc_group(group, &groups_at.index(i))?);
            }
        }

        Ok(Self {
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
            fingerprints,
            ssrc,
            ssrc_groups,
        })
    }
}

/// The SFU's answer, from `updateGroupCallConnection.params.data` (telegram-signaling.md §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    /// Remote ICE and DTLS parameters of the SFU (ICE-lite, DTLS client).
    pub transport: Transport,
    /// Audio payload types and header extensions; absent in some answers (tgcalls never reads
    /// it), in which case the tgcalls constants apply ([`OPUS_DEFAULT_PT`],
    /// [`AUDIO_LEVEL_DEFAULT_ID`], ...).
    pub audio: Option<MediaDescription>,
    /// Video payload types, extensions and bandwidth-probing SSRCs, when the SFU offers video.
    pub video: Option<VideoDescription>,
}

/// The SFU's ICE credentials, DTLS fingerprints and candidates (`transport` object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// Remote ICE username fragment (non-empty, at most 256 chars).
    pub ufrag: String,
    /// Remote ICE password (non-empty, at most 256 chars); keys STUN MESSAGE-INTEGRITY.
    pub pwd: String,
    /// Remote certificate fingerprints; never empty. Verify the SFU against the first one
    /// (telegram-signaling.md §2.4).
    pub fingerprints: Vec<DtlsFingerprint>,
    /// UDP candidates of the SFU, in answer order; may be empty. Non-UDP ones are dropped.
    pub candidates: Vec<IceCandidate>,
}

/// One remote ICE candidate (RFC 8445 §5.1; Jingle ICE-UDP field names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    /// Foundation, opaque (may be empty if the SFU omitted it).
    pub foundation: String,
    /// ICE component, 1..=256; 1 (RTP, RTCP is muxed) unless the SFU says otherwise.
    pub component: u16,
    /// Transport protocol, lowercase; always `"udp"` after parsing (others are skipped).
    pub protocol: String,
    /// Candidate priority (RFC 8445 §5.1.2), full unsigned 32-bit range.
    pub priority: u32,
    /// Candidate address, IPv4 or IPv6.
    pub ip: IpAddr,
    /// Candidate port, 1..=65535.
    pub port: u16,
    /// Candidate type: `"host"`, `"srflx"`, `"prflx"` or `"relay"`; Telegram's `"local"` is
    /// stored as `"host"`.
    pub kind: String,
    /// ICE generation (Jingle); 0 when absent.
    pub generation: u32,
    /// Network id (Jingle); 0 when absent.
    pub network: u32,
    /// Candidate id (Jingle), opaque; empty when absent.
    pub id: String,
    /// Related address (`rel-addr` + `rel-port`) of a reflexive or relayed candidate.
    pub rel_addr: Option<SocketAddr>,
}

impl IceCandidate {
    /// The transport address to send connectivity checks to.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// Payload types and RTP header extensions of one media section (`audio` or `video`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaDescription {
    /// Payload types in answer order; ids are unique.
    pub payload_types: Vec<PayloadType>,
    /// Header extensions in answer order; ids are unique and within 1..=14.
    pub rtp_hdrexts: Vec<HeaderExtension>,
}

/// One RTP payload type (an `a=rtpmap` + `a=fmtp` + `a=rtcp-fb` set, in JSON form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadType {
    /// Payload type number, 0..=127.
    pub id: u8,
    /// Encoding name as sent (`"opus"`, `"VP8"`, `"rtx"`...); compare case-insensitively.
    pub name: String,
    /// RTP clock rate in Hz; 0 when absent (tgcalls' default).
    pub clockrate: u32,
    /// Channel count; 1 when absent (tgcalls' default). Opus is announced with 2.
    pub channels: u8,
    /// Format parameters (`a=fmtp`), sorted by name, numbers stringified (`"minptime" = "10"`).
    /// Names must be unique for [`JoinResponse::to_json`] to round-trip.
    pub parameters: Vec<(String, String)>,
    /// RTCP feedback mechanisms (`a=rtcp-fb`).
    pub rtcp_fbs: Vec<RtcpFeedback>,
}

/// One RTCP feedback mechanism, e.g. `transport-cc` or `nack` + `pli` (RFC 4585 §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RtcpFeedback {
    /// Feedback type, e.g. `"nack"`, `"ccm"`, `"goog-remb"`, `"transport-cc"`; never empty.
    pub kind: String,
    /// Feedback parameter, e.g. `"pli"` or `"fir"`; never `Some("")`.
    pub subtype: Option<String>,
}

/// One RTP header extension mapping (`a=extmap`, RFC 8285).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderExtension {
    /// Local identifier in the one-byte header form, 1..=14.
    pub id: u8,
    /// Extension URI, e.g. [`URI_AUDIO_LEVEL`].
    pub uri: String,
}

/// The `video` section of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoDescription {
    /// This client's colibri endpoint id, used in data-channel constraints.
    pub endpoint: Option<String>,
    /// SSRCs the SFU uses for bandwidth probing; tgcalls keeps the last one.
    pub server_sources: Vec<Ssrc>,
    /// Video payload types and header extensions.
    pub media: MediaDescription,
}

impl JoinResponse {
    /// Parses the SFU answer; see the [module docs](self) for what is accepted and rejected.
    ///
    /// An answer without `transport` that carries `rtmp` or `stream` instead yields
    /// [`SignalingError::NoRtcTransport`] (telegram-signaling.md §2.2); one with neither yields
    /// [`SignalingError::MissingField`] for `transport`.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignalingError> {
        let doc = parse_document(bytes)?;
        let root = Path::Root;
        let obj = object(&doc, &root)?;

        let Some(transport) = optional(obj, "transport") else {
            // ntgcalls checks these before `transport`; a present-but-false flag means "no".
            for kind in ["rtmp", "stream"] {
                if optional(obj, kind).is_some_and(|v| v != &Value::Bool(false)) {
                    return Err(SignalingError::NoRtcTransport { kind });
                }
            }
            return Err(root.key("transport").missing());
        };
        let transport = parse_transport(transport, &root.key("transport"))?;

        let audio_at = root.key("audio");
        let audio = match optional(obj, "audio") {
            Some(audio) => Some(parse_media(object(audio, &audio_at)?, &audio_at)?),
            None => None,
        };

        let video_at = root.key("video");
        let video = match optional(obj, "video") {
            Some(video) => Some(parse_video(video, &video_at)?),
            None => None,
        };

        Ok(Self {
            transport,
            audio,
            video,
        })
    }

    /// Serializes to Telegram's §2 shape: candidate fields as strings (as tgcalls requires),
    /// `xmlns` and `"rtcp-mux": true` in `transport`, payload-type and extension ids as numbers,
    /// `server_sources` as signed 32-bit numbers. Parameters that are canonical unsigned
    /// integers are emitted as JSON numbers (`"minptime": 10`), others as strings.
    pub fn to_json(&self) -> String {
        json::emit(2048, |o| {
            o.object("transport", |o| write_transport(o, &self.transport));
            if let Some(audio) = &self.audio {
                o.object("audio", |o| write_media_fields(o, audio));
            }
            if let Some(video) = &self.video {
                o.object("video", |o| {
                    if let Some(endpoint) = &video.endpoint {
                        o.field("endpoint", endpoint);
                    }
                    if !video.server_sources.is_empty() {
                        o.array("server_sources", |a| write_ssrcs(a, &video.server_sources));
                    }
                    write_media_fields(o, &video.media);
                });
            }
        })
    }

    /// The audio payload type named `name` (ASCII case-insensitive), if the answer has one.
    pub fn audio_payload_type(&self, name: &str) -> Option<&PayloadType> {
        self.audio
            .as_ref()?
            .payload_types
            .iter()
            .find(|pt| pt.name.eq_ignore_ascii_case(name))
    }

    /// The Opus payload type to send with: the answer's `opus` entry, else [`OPUS_DEFAULT_PT`].
    pub fn opus_pt(&self) -> u8 {
        self.audio_payload_type("opus")
            .map_or(OPUS_DEFAULT_PT, |pt| pt.id)
    }

    /// The video payload type to send `codec` with and its RTX payload type (the `rtx` entry
    /// whose `apt` names it), if the answer's `video` section offers both. Among several H.264
    /// entries, one with `packetization-mode=1` is preferred (what we packetize).
    pub fn video_payload_types(&self, codec: VideoCodec) -> Option<(u8, u8)> {
        let pts = &self.video.as_ref()?.media.payload_types;
        let rtx_for = |pt: u8| {
            pts.iter()
                .find(|p| {
                    p.name.eq_ignore_ascii_case("rtx")
                        && p.parameters
                            .iter()
                            .any(|(k, v)| k == "apt" && v.parse::<u8>() == Ok(pt))
                })
                .map(|p| p.id)
        };
        let mode1 = |p: &PayloadType| {
            p.parameters
                .iter()
                .any(|(k, v)| k == "packetization-mode" && v == "1")
        };
        let mut candidates: Vec<&PayloadType> = pts
            .iter()
            .filter(|p| p.name.eq_ignore_ascii_case(codec.rtp_name()))
            .collect();
        // Stable: answer order within each class.
        candidates.sort_by_key(|p| !mode1(p));
        candidates
            .into_iter()
            .find_map(|p| rtx_for(p.id).map(|rtx| (p.id, rtx)))
    }

    /// The audio header-extension id the answer maps to `uri`, if any.
    ///
    /// `None` means the answer did not say; callers fall back to the tgcalls ids
    /// ([`AUDIO_LEVEL_DEFAULT_ID`], [`ABS_SEND_TIME_DEFAULT_ID`], [`TRANSPORT_CC_DEFAULT_ID`]).
    pub fn audio_extension_id(&self, uri: &str) -> Option<u8> {
        self.audio
            .as_ref()?
            .rtp_hdrexts
            .iter()
            .find(|ext| ext.uri == uri)
            .map(|ext| ext.id)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

fn parse_transport(value: &Value, at: &Path<'_>) -> Result<Transport, SignalingError> {
    let obj = object(value, at)?;
    let ufrag = required_str(obj, at, "ufrag")?;
    check_remote_credential(ufrag, &at.key("ufrag"))?;
    let pwd = required_str(obj, at, "pwd")?;
    check_remote_credential(pwd, &at.key("pwd"))?;
    let fingerprints = parse_fingerprints(obj, at)?;

    let candidates_at = at.key("candidates");
    let list = array(required(obj, at, "candidates")?, &candidates_at)?;
    let mut candidates = Vec::with_capacity(list.len());
    for (i, candidate) in list.iter().enumerate() {
        if let Some(candidate) = parse_candidate(candidate, &candidates_at.index(i))? {
            candidates.push(candidate);
        }
    }

    Ok(Transport {
        ufrag: ufrag.to_owned(),
        pwd: pwd.to_owned(),
        fingerprints,
        candidates,
    })
}

/// Parses `fingerprints` of `obj` (shared by the join payload and the answer's transport).
fn parse_fingerprints(
    obj: &Map<String, Value>,
    at: &Path<'_>,
) -> Result<Vec<DtlsFingerprint>, SignalingError> {
    let list_at = at.key("fingerprints");
    let list = array(required(obj, at, "fingerprints")?, &list_at)?;
    if list.is_empty() {
        return Err(list_at.invalid("at least one fingerprint is required"));
    }
    let mut fingerprints = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let entry_at = list_at.index(i);
        let entry_obj = object(entry, &entry_at)?;
        let hash = required_str(entry_obj, &entry_at, "hash")?;
        if hash.is_empty() {
            return Err(entry_at.key("hash").invalid("must not be empty"));
        }
        let fingerprint = required_str(entry_obj, &entry_at, "fingerprint")?;
        check_fingerprint(hash, fingerprint, &entry_at.key("fingerprint"))?;
        let setup_at = entry_at.key("setup");
        let setup = match optional(entry_obj, "setup") {
            Some(setup) => string(setup, &setup_at)?,
            None => "",
        };
        fingerprints.push(DtlsFingerprint {
            hash: hash.to_owned(),
            setup: setup.to_owned(),
            fingerprint: fingerprint.to_owned(),
        });
    }
    Ok(fingerprints)
}

fn parse_ssrc_group(value: &Value, at: &Path<'_>) -> Result<SsrcGroup, SignalingError> {
    let obj = object(value, at)?;
    let semantics = required_str(obj, at, "semantics")?;
    if semantics.is_empty() {
        return Err(at.key("semantics").invalid("must not be empty"));
    }
    let sources_at = at.key("sources");
    let list = array(required(obj, at, "sources")?, &sources_at)?;
    if list.is_empty() {
        return Err(sources_at.invalid("an ssrc group needs at least one source"));
    }
    let sources = list
        .iter()
        .enumerate()
        .map(|(i, v)| ssrc(v, &sources_at.index(i)))
        .collect::<Result<_, _>>()?;
    Ok(SsrcGroup {
        semantics: semantics.to_owned(),
        sources,
    })
}

/// Parses one candidate; `Ok(None)` for a non-UDP candidate, which is skipped unread.
fn parse_candidate(value: &Value, at: &Path<'_>) -> Result<Option<IceCandidate>, SignalingError> {
    let obj = object(value, at)?;
    let protocol = required_str(obj, at, "protocol")?;
    if !protocol.eq_ignore_ascii_case("udp") {
        return Ok(None);
    }

    let ip = ip_addr(required(obj, at, "ip")?, &at.key("ip"))?;
    let port = integer(required(obj, at, "port")?, &at.key("port"), 1, u16::MAX)?;
    let priority = integer(
        required(obj, at, "priority")?,
        &at.key("priority"),
        0,
        u32::MAX,
    )?;

    let kind_at = at.key("type");
    let kind = match required_str(obj, at, "type")? {
        k if k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("local") => "host",
        k if k.eq_ignore_ascii_case("srflx") => "srflx",
        k if k.eq_ignore_ascii_case("prflx") => "prflx",
        k if k.eq_ignore_ascii_case("relay") => "relay",
        other => {
            return Err(kind_at.invalid(format!(
                "unknown candidate type {}, expected host, local, srflx, prflx or relay",
                quoted(other)
            )));
        }
    };

    let component = optional_integer(obj, at, "component", 1, ICE_COMPONENT_MAX)?.unwrap_or(1);
    let generation = optional_integer(obj, at, "generation", 0, u32::MAX)?.unwrap_or(0);
    let network = optional_integer(obj, at, "network", 0, u32::MAX)?.unwrap_or(0);
    let foundation = optional_text(obj, at, "foundation")?;
    let id = optional_text(obj, at, "id")?;

    // tgcalls reads rel-addr/rel-port as optional strings; an empty rel-addr means "none".
    let rel_addr = match optional(obj, "rel-addr") {
        Some(Value::String(s)) if s.is_empty() => None,
        Some(addr) => {
            let rel_ip = ip_addr(addr, &at.key("rel-addr"))?;
            // Port 0 is legal here: RFC 8839 §5.1 lets agents hide the base as `0.0.0.0 0`.
            let rel_port = integer(
                required(obj, at, "rel-port")?,
                &at.key("rel-port"),
                0,
                u16::MAX,
            )?;
            Some(SocketAddr::new(rel_ip, rel_port))
        }
        None => None,
    };

    Ok(Some(IceCandidate {
        foundation,
        component,
        protocol: "udp".to_owned(),
        priority,
        ip,
        port,
        kind: kind.to_owned(),
        generation,
        network,
        id,
        rel_addr,
    }))
}

/// Parses `payload-types` and `rtp-hdrexts` of a media section object (both optional).
fn parse_media(
    obj: &Map<String, Value>,
    at: &Path<'_>,
) -> Result<MediaDescription, SignalingError> {
    let mut media = MediaDescription::default();

    let pts_at = at.key("payload-types");
    if let Some(list) = optional(obj, "payload-types") {
        let list = array(list, &pts_at)?;
        media.payload_types.reserve(list.len());
        for (i, entry) in list.iter().enumerate() {
            let entry_at = pts_at.index(i);
            let pt = parse_payload_type(entry, &entry_at)?;
            if media.payload_types.iter().any(|p| p.id == pt.id) {
                return Err(entry_at
                    .key("id")
                    .invalid(format!("duplicate payload type {}", pt.id)));
            }
            media.payload_types.push(pt);
        }
    }

    let exts_at = at.key("rtp-hdrexts");
    if let Some(list) = optional(obj, "rtp-hdrexts") {
        let list = array(list, &exts_at)?;
        media.rtp_hdrexts.reserve(list.len());
        for (i, entry) in list.iter().enumerate() {
            let entry_at = exts_at.index(i);
            let entry_obj = object(entry, &entry_at)?;
            let id_at = entry_at.key("id");
            let (min, max) = HEADER_EXTENSION_IDS;
            let id = integer(required(entry_obj, &entry_at, "id")?, &id_at, min, max)?;
            if media.rtp_hdrexts.iter().any(|e| e.id == id) {
                return Err(id_at.invalid(format!("duplicate header extension id {id}")));
            }
            let uri = required_str(entry_obj, &entry_at, "uri")?;
            if uri.is_empty() {
                return Err(entry_at.key("uri").invalid("must not be empty"));
            }
            media.rtp_hdrexts.push(HeaderExtension {
                id,
                uri: uri.to_owned(),
            });
        }
    }

    Ok(media)
}

fn parse_payload_type(value: &Value, at: &Path<'_>) -> Result<PayloadType, SignalingError> {
    let obj = object(value, at)?;
    let id = integer(required(obj, at, "id")?, &at.key("id"), 0, PAYLOAD_TYPE_MAX)?;
    let name = required_str(obj, at, "name")?;
    if name.is_empty() {
        return Err(at.key("name").invalid("must not be empty"));
    }
    let clockrate = optional_integer(obj, at, "clockrate", 0, u32::MAX)?.unwrap_or(0);
    let channels = optional_integer(obj, at, "channels", 0, u8::MAX)?.unwrap_or(1);

    let mut parameters = Vec::new();
    let params_at = at.key("parameters");
    if let Some(params) = optional(obj, "parameters") {
        let params = object(params, &params_at)?;
        if params.len() > MAX_LIST_ITEMS {
            return Err(params_at.invalid(too_many(params.len())));
        }
        parameters.reserve(params.len());
        for (name, value) in params {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(params_at.key(name).invalid(format!(
                        "expected a string or a number, found {}",
                        type_name(other)
                    )));
                }
            };
            parameters.push((name.clone(), value));
        }
        // serde_json's map order depends on its `preserve_order` feature; make it stable.
        parameters.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }

    let mut rtcp_fbs = Vec::new();
    let fbs_at = at.key("rtcp-fbs");
    if let Some(list) = optional(obj, "rtcp-fbs") {
        let list = array(list, &fbs_at)?;
        rtcp_fbs.reserve(list.len());
        for (i, entry) in list.iter().enumerate() {
            rtcp_fbs.push(parse_feedback(entry, &fbs_at.index(i))?);
        }
    }

    Ok(PayloadType {
        id,
        name: name.to_owned(),
        clockrate,
        channels,
        parameters,
        rtcp_fbs,
    })
}

/// Parses `{type, subtype?}`, `{type: "nack pli"}` (tgcalls splits on the space) or `"nack pli"`.
fn parse_feedback(value: &Value, at: &Path<'_>) -> Result<RtcpFeedback, SignalingError> {
    let type_at = at.key("type");
    let (text, explicit_subtype, text_at) = match value {
        Value::String(s) => (s.as_str(), None, at),
        Value::Object(obj) => {
            let subtype_at = at.key("subtype");
            let subtype = match optional(obj, "subtype") {
                Some(v) => Some(string(v, &subtype_at)?).filter(|s| !s.is_empty()),
                None => None,
            };
            (required_str(obj, at, "type")?, subtype, &type_at)
        }
        other => {
            return Err(at.invalid(format!(
                "expected an object or a string, found {}",
                type_name(other)
            )));
        }
    };

    let (kind, split_subtype) = match text.split_once(' ') {
        Some((kind, rest)) => (kind, Some(rest.trim()).filter(|s| !s.is_empty())),
        None => (text, None),
    };
    if kind.is_empty() {
        return Err(text_at.invalid("feedback type must not be empty"));
    }
    let subtype = match (split_subtype, explicit_subtype) {
        (Some(_), Some(_)) => {
            return Err(text_at.invalid("subtype given both after a space and in `subtype`"));
        }
        (Some(s), None) | (None, Some(s)) => Some(s.to_owned()),
        (None, None) => None,
    };
    Ok(RtcpFeedback {
        kind: kind.to_owned(),
        subtype,
    })
}

fn parse_video(value: &Value, at: &Path<'_>) -> Result<VideoDescription, SignalingError> {
    let obj = object(value, at)?;
    let endpoint_at = at.key("endpoint");
    let endpoint = match optional(obj, "endpoint") {
        Some(v) => Some(text(v, &endpoint_at)?),
        None => None,
    };
    let sources_at = at.key("server_sources");
    let server_sources = match optional(obj, "server_sources") {
        Some(list) => array(list, &sources_at)?
            .iter()
            .enumerate()
            .map(|(i, v)| ssrc(v, &sources_at.index(i)))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok(VideoDescription {
        endpoint,
        server_sources,
        media: parse_media(obj, at)?,
    })
}

/// The SFU's own credentials are taken as given (we only echo them in STUN), but must be usable.
fn check_remote_credential(value: &str, at: &Path<'_>) -> Result<(), SignalingError> {
    if value.is_empty() {
        return Err(at.invalid("must not be empty"));
    }
    let chars = value.chars().count();
    if chars > ICE_CREDENTIAL_MAX_CHARS {
        return Err(at.invalid(format!(
            "{chars} chars, at most {ICE_CREDENTIAL_MAX_CHARS} allowed"
        )));
    }
    Ok(())
}

/// RFC 8122 §5 fingerprint form of a digest: uppercase hex bytes joined by `:`.
pub fn fingerprint_hex(digest: &[u8]) -> String {
    let mut s = String::with_capacity(digest.len() * 3);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// The digest bytes of an RFC 8122 fingerprint; `None` unless every part is two hex digits.
pub fn parse_fingerprint_hex(fingerprint: &str) -> Option<Vec<u8>> {
    fingerprint.split(':').map(hex_byte).collect()
}

// ---------------------------------------------------------------------------------------------
// Emitting
// ---------------------------------------------------------------------------------------------

fn write_transport(o: &mut Object<'_>, transport: &Transport) {
    o.field("xmlns", XMLNS_ICE_UDP)
        .field("rtcp-mux", true)
        .field("ufrag", &transport.ufrag)
        .field("pwd", &transport.pwd)
        .array("fingerprints", |a| {
            write_fingerprints(a, &transport.fingerprints)
        })
        .array("candidates", |a| {
            for c in &transport.candidates {
                // All candidate fields are strings: tgcalls' parseString rejects numbers.
                a.object(|o| {
                    o.field("generation", Quoted(c.generation))
                        .field("component", Quoted(c.component))
                        .field("protocol", &c.protocol)
                        .field("port", Quoted(c.port))
                        .field("ip", Quoted(c.ip))
                        .field("foundation", &c.foundation)
                        .field("id", &c.id)
                        .field("priority", Quoted(c.priority))
                        .field("type", &c.kind)
                        .field("network", Quoted(c.network));
                    if let Some(rel) = c.rel_addr {
                        o.field("rel-addr", Quoted(rel.ip()))
                            .field("rel-port", Quoted(rel.port()));
                    }
                });
            }
        });
}

fn write_fingerprints(a: &mut Array<'_>, fingerprints: &[DtlsFingerprint]) {
    for fp in fingerprints {
        a.object(|o| {
            o.field("hash", &fp.hash);
            if !fp.setup.is_empty() {
                o.field("setup", &fp.setup);
            }
            o.field("fingerprint", &fp.fingerprint);
        });
    }
}

/// Writes the `payload-types` and `rtp-hdrexts` fields (shared by audio and video).
fn write_media_fields(o: &mut Object<'_>, media: &MediaDescription) {
    o.array("payload-types", |a| {
        for pt in &media.payload_types {
            a.object(|o| {
                o.field("id", pt.id)
                    .field("name", &pt.name)
                    .field("clockrate", pt.clockrate);
                if pt.channels != 1 {
                    o.field("channels", pt.channels);
                }
                if !pt.parameters.is_empty() {
                    o.object("parameters", |o| {
                        for (name, value) in &pt.parameters {
                            if is_canonical_unsigned(value) {
                                o.field(name, Raw(value));
                            } else {
                                o.field(name, value);
                            }
                        }
                    });
                }
                if !pt.rtcp_fbs.is_empty() {
                    o.array("rtcp-fbs", |a| {
                        for fb in &pt.rtcp_fbs {
                            a.object(|o| {
                                o.field("type", &fb.kind);
                                if let Some(subtype) = &fb.subtype {
                                    o.field("subtype", subtype);
                                }
                            });
                        }
                    });
                }
            });
        }
    })
    .array("rtp-hdrexts", |a| {
        for ext in &media.rtp_hdrexts {
            a.object(|o| {
                o.field("id", ext.id).field("uri", &ext.uri);
            });
        }
    });
}

/// Writes SSRCs as the signed 32-bit numbers Telegram expects (bit-cast).
fn write_ssrcs(a: &mut Array<'_>, ssrcs: &[Ssrc]) {
    for ssrc in ssrcs {
        a.item(ssrc.as_i32_bits());
    }
}

/// True for the decimal text of a `u64` without sign or leading zeros: emitting it as a JSON
/// number parses back to the same string, so the round trip is exact.
fn is_canonical_unsigned(s: &str) -> bool {
    let well_formed = match s.as_bytes() {
        [b'0'] => true,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
        [] => false,
    };
    well_formed && s.parse::<u64>().is_ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fmt::Debug;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::signaling::MAX_SIGNALING_BYTES;

    /// A full 32-byte sha-256 fingerprint (the §2 example elides the middle).
    const FP: &str = concat!(
        "0B:7C:1D:2E:3F:40:51:62:73:84:95:A6:B7:C8:D9:EA:",
        "FB:0C:1D:2E:3F:40:51:62:73:84:95:A6:B7:C8:D9:E1"
    );

    /// The telegram-signaling.md §2 example, candidate fields as strings as Telegram sends them.
    fn telegram_answer() -> Value {
        json!({"transport":{"xmlns":"urn:xmpp:jingle:transports:ice-udp:1","rtcp-mux":true,
           "ufrag":"1d2e3f4g5h6i7","pwd":"3k4l5m6n7o8p9q0r1s2t3u4v",
           "fingerprints":[{"hash":"sha-256","setup":"active","fingerprint":FP}],
           "candidates":[
            {"generation":"0","component":"1","protocol":"udp","port":"32001","ip":"203.0.113.10",
             "foundation":"1","id":"6f1b2c","priority":"2130706431","type":"host","network":"0"},
            {"generation":"0","component":"1","protocol":"udp","port":"32001","ip":"2001:db8::10",
             "foundation":"2","id":"6f1b2d","priority":"2130706175","type":"host","network":"0"}]},
         "audio":{"payload-types":[{"id":111,"name":"opus","clockrate":48000,"channels":2,
             "parameters":{"minptime":10,"useinbandfec":1},"rtcp-fbs":[{"type":"transport-cc"}]}],
           "rtp-hdrexts":[{"id":1,"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level"},
             {"id":3,"uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"}]},
         "video":{"endpoint":"a1b2c3d4","server_sources":[-1_017_713_629],
           "payload-types":[{"id":100,"name":"VP8","clockrate":90000,"rtcp-fbs":[{"type":"goog-remb"},
               {"type":"transport-cc"},{"type":"ccm","subtype":"fir"},{"type":"nack"},{"type":"nack","subtype":"pli"}]},
             {"id":101,"name":"rtx","clockrate":90000,"parameters":{"apt":100}}],
           "rtp-hdrexts":[{"id":2,"uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"},
             {"id":3,"uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"},
             {"id":13,"uri":"urn:3gpp:video-orientation"}]}})
    }

    fn join_value() -> Value {
        json!({"ufrag":"Xq3b","pwd":"pT0aQ1r2S3t4U5v6W7x8Y9z0",
               "fingerprints":[{"hash":"sha-256","setup":"passive","fingerprint":FP}],
               "ssrc":1_234_567_890,
               "ssrc-groups":[{"semantics":"SIM","sources":[1_234_567_891, 1_234_567_893]},
                              {"semantics":"FID","sources":[1_234_567_891, -5]}]})
    }

    fn parse_answer(v: &Value) -> Result<JoinResponse, SignalingError> {
        JoinResponse::parse(v.to_string().as_bytes())
    }

    fn parse_join(v: &Value) -> Result<JoinPayload, SignalingError> {
        JoinPayload::parse(v.to_string().as_bytes())
    }

    /// The `field` of an `InvalidField` error; panics on anything else.
    fn invalid_field<T: Debug>(result: Result<T, SignalingError>) -> String {
        match result {
            Err(SignalingError::InvalidField { field, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    /// The `field` of a `MissingField` error; panics on anything else.
    fn missing_field<T: Debug>(result: Result<T, SignalingError>) -> String {
        match result {
            Err(SignalingError::MissingField { field }) => field,
            other => panic!("expected MissingField, got {other:?}"),
        }
    }

    /// `v` with the value at JSON pointer `pointer` set (inserted if the key is new).
    fn with(mut v: Value, pointer: &str, new: Value) -> Value {
        let (parent, last) = pointer.rsplit_once('/').expect("pointer starts with /");
        match v
            .pointer_mut(parent)
            .expect("parent exists in the test document")
        {
            Value::Object(map) => {
                map.insert(last.to_owned(), new);
            }
            Value::Array(items) => items[last.parse::<usize>().expect("array index")] = new,
            other => panic!("{parent} is {other}, not a container"),
        }
        v
    }

    fn without(mut v: Value, pointer: &str, key: &str) -> Value {
        v.pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .expect("pointer names an object")
            .remove(key)
            .expect("key exists");
        v
    }

    #[test]
    fn parses_telegram_answer_with_strings_for_numbers() {
        let r = parse_answer(&telegram_answer()).unwrap();
        assert_eq!(r.transport.ufrag, "1d2e3f4g5h6i7");
        assert_eq!(r.transport.pwd, "3k4l5m6n7o8p9q0r1s2t3u4v");
        assert_eq!(
            r.transport.fingerprints,
            vec![DtlsFingerprint {
                hash: "sha-256".into(),
                setup: "active".into(),
                fingerprint: FP.into(),
            }]
        );
        assert_eq!(r.transport.candidates.len(), 2);
        let c = &r.transport.candidates[0];
        assert_eq!(
            *c,
            IceCandidate {
                foundation: "1".into(),
                component: 1,
                protocol: "udp".into(),
                priority: 2_130_706_431,
                ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
                port: 32001,
                kind: "host".into(),
                generation: 0,
                network: 0,
                id: "6f1b2c".into(),
                rel_addr: None,
            }
        );
        assert_eq!(c.address(), "203.0.113.10:32001".parse().unwrap());

        let audio = r.audio.as_ref().unwrap();
        assert_eq!(
            audio.payload_types,
            vec![PayloadType {
                id: 111,
                name: "opus".into(),
                clockrate: 48000,
                channels: 2,
                parameters: vec![
                    ("minptime".into(), "10".into()),
                    ("useinbandfec".into(), "1".into())
                ],
                rtcp_fbs: vec![RtcpFeedback {
                    kind: "transport-cc".into(),
                    subtype: None
                }],
            }]
        );
        assert_eq!(r.opus_pt(), 111);
        assert_eq!(r.audio_extension_id(URI_AUDIO_LEVEL), Some(1));
        assert_eq!(r.audio_extension_id(URI_TRANSPORT_CC), Some(3));
        assert_eq!(r.audio_extension_id(URI_ABS_SEND_TIME), None);

        let video = r.video.as_ref().unwrap();
        assert_eq!(video.endpoint.as_deref(), Some("a1b2c3d4"));
        assert_eq!(video.server_sources, vec![Ssrc(3_277_253_667)]);
        assert_eq!(video.media.payload_types.len(), 2);
        assert_eq!(video.media.payload_types[0].channels, 1);
        assert_eq!(
            video.media.payload_types[0].rtcp_fbs[2],
            RtcpFeedback {
                kind: "ccm".into(),
                subtype: Some("fir".into())
            }
        );
        assert_eq!(
            video.media.payload_types[1].parameters,
            vec![("apt".into(), "100".into())]
        );
        assert_eq!(video.media.rtp_hdrexts[2].id, 13);
    }

    #[test]
    fn parses_numbers_as_numbers() {
        let mut v = telegram_answer();
        for c in v["transport"]["candidates"].as_array_mut().unwrap() {
            for key in [
                "generation",
                "component",
                "port",
                "priority",
                "network",
                "foundation",
            ] {
                let n: u64 = c[key].as_str().unwrap().parse().unwrap();
                c[key] = json!(n);
            }
        }
        let v = with(v, "/audio/payload-types/0/id", json!("111"));
        let v = with(v, "/audio/payload-types/0/clockrate", json!("48000"));
        let v = with(v, "/audio/payload-types/0/channels", json!("2"));
        let v = with(v, "/audio/rtp-hdrexts/0/id", json!("1"));
        let v = with(v, "/video/server_sources/0", json!("3277253667"));
        assert_eq!(
            parse_answer(&v).unwrap(),
            parse_answer(&telegram_answer()).unwrap()
        );
    }

    #[test]
    fn ignores_extra_fields_and_nulls() {
        let v = with(
            telegram_answer(),
            "/transport/candidates/0/tcptype",
            json!("passive"),
        );
        let v = with(v, "/transport/candidates/0/extra", json!({"deep": [1, 2]}));
        let v = with(v, "/audio/payload-types/0/extra", json!(null));
        let v = with(v, "/transport/fingerprints/0/extra", json!(7));
        let v = with(v, "/transport/rtcp-mux", json!("not even a bool"));
        let v = with(v, "/transport/xmlns", json!(12));
        let mut v = v;
        v["rtmp"] = json!(null);
        v["conference"] = json!({"id": "x"});
        v["video"]["endpoint"] = json!(null);
        let r = parse_answer(&v).unwrap();
        assert_eq!(
            r.transport,
            parse_answer(&telegram_answer()).unwrap().transport
        );
        assert_eq!(r.video.unwrap().endpoint, None);
    }

    #[test]
    fn parses_ipv6_candidate() {
        let r = parse_answer(&telegram_answer()).unwrap();
        let c = &r.transport.candidates[1];
        assert_eq!(
            c.ip,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10))
        );
        assert_eq!(c.address().to_string(), "[2001:db8::10]:32001");
    }

    #[test]
    fn local_type_is_host() {
        let v = with(
            telegram_answer(),
            "/transport/candidates/0/type",
            json!("local"),
        );
        assert_eq!(
            parse_answer(&v).unwrap().transport.candidates[0].kind,
            "host"
        );
        let v = with(
            telegram_answer(),
            "/transport/candidates/0/type",
            json!("srflx"),
        );
        assert_eq!(
            parse_answer(&v).unwrap().transport.candidates[0].kind,
            "srflx"
        );
        let v = with(
            telegram_answer(),
            "/transport/candidates/0/type",
            json!("bogus"),
        );
        assert_eq!(
            invalid_field(parse_answer(&v)),
            "transport.candidates[0].type"
        );
    }

    #[test]
    fn priority_uses_the_full_u32_range() {
        let v = with(
            telegram_answer(),
            "/transport/candidates/0/priority",
            json!("4294967295"),
        );
        assert_eq!(
            parse_answer(&v).unwrap().transport.candidates[0].priority,
            u32::MAX
        );
        for bad in [
            json!("4294967296"),
            json!("-1"),
            json!(-1),
            json!("99999999999999999999999999999999999999999"),
        ] {
            let v = with(telegram_answer(), "/transport/candidates/0/priority", bad);
            assert_eq!(
                invalid_field(parse_answer(&v)),
                "transport.candidates[0].priority"
            );
        }
    }

    #[test]
    fn rtcp_feedback_accepts_all_three_forms() {
        let fbs = json!([{"type":"nack pli"}, "nack pli", {"type":"nack","subtype":"pli"},
                         "goog-remb", {"type":"nack","subtype":""}]);
        let v = with(telegram_answer(), "/audio/payload-types/0/rtcp-fbs", fbs);
        let r = parse_answer(&v).unwrap();
        let pli = RtcpFeedback {
            kind: "nack".into(),
            subtype: Some("pli".into()),
        };
        let fbs = &r.audio.unwrap().payload_types[0].rtcp_fbs;
        assert_eq!(fbs[..3], [pli.clone(), pli.clone(), pli]);
        assert_eq!(
            fbs[3],
            RtcpFeedback {
                kind: "goog-remb".into(),
                subtype: None
            }
        );
        assert_eq!(
            fbs[4],
            RtcpFeedback {
                kind: "nack".into(),
                subtype: None
            }
        );

        let both = json!([{"type":"nack pli","subtype":"fir"}]);
        let v = with(telegram_answer(), "/audio/payload-types/0/rtcp-fbs", both);
        assert_eq!(
            invalid_field(parse_answer(&v)),
            "audio.payload-types[0].rtcp-fbs[0].type"
        );
        let v = with(
            telegram_answer(),
            "/audio/payload-types/0/rtcp-fbs",
            json!([" pli"]),
        );
        assert_eq!(
            invalid_field(parse_answer(&v)),
            "audio.payload-types[0].rtcp-fbs[0]"
        );
        let v = with(
            telegram_answer(),
            "/audio/payload-types/0/rtcp-fbs",
            json!([3]),
        );
        assert_eq!(
            invalid_field(parse_answer(&v)),
            "audio.payload-types[0].rtcp-fbs[0]"
        );
    }

    #[test]
    fn parameters_accept_numbers_and_strings_but_not_other_types() {
        let params = json!({"b": "x", "a": 1.5, "c": -3});
        let v = with(
            telegram_answer(),
            "/audio/payload-types/0/parameters",
            params,
        );
        let r = parse_answer(&v).unwrap();
        assert_eq!(
            r.audio.unwrap().payload_types[0].parameters,
            vec![
                ("a".into(), "1.5".into()),
                ("b".into(), "x".into()),
                ("c".into(), "-3".into())
            ]
        );
        let v = with(
            telegram_answer(),
            "/audio/payload-types/0/parameters",
            json!({"x": true}),
        );
        assert_eq!(
            invalid_field(parse_answer(&v)),
            "audio.payload-types[0].parameters.x"
        );
    }

    #[test]
    fn tcp_candidates_are_skipped() {
        let mut v = telegram_answer();
        v["transport"]["candidates"][0]["protocol"] = json!("tcp");
        // Nothing else of a skipped candidate is read, not even a broken port.
        v["transport"]["candidates"][0]["port"] = json!("garbage");
        let r = parse_answer(&v).unwrap();
        assert_eq!(r.transport.candidates.len(), 1);
        assert_eq!(r.transport.candidates[0].id, "6f1b2d");
        let v = without(telegram_answer(), "/transport/candidates/1", "protocol");
        assert_eq!(
            missing_field(parse_answer(&v)),
            "transport.candidates[1].protocol"
        );
    }

    #[test]
    fn optional_candidate_fields_default() {
        let v = json!({"transport":{"ufrag":"u","pwd":"p","fingerprints":[{"hash":"sha-256","fingerprint":FP}],
            "candidates":[{"protocol":"UDP","ip":"192.0.2.1","port":1,"priority":0,"type":"HOST",
                           "rel-addr":"0.0.0.0","rel-port":"0"}]}});
        let r = parse_answer(&v).unwrap();
        assert_eq!(r.transport.fingerprints[0].setup, "");
        assert_eq!(r.audio, None);
        assert_eq!(r.video, None);
        assert_eq!(r.opus_pt(), OPUS_DEFAULT_PT);
        assert_eq!(r.audio_extension_id(URI_AUDIO_LEVEL), None);
        assert_eq!(r.audio_payload_type("opus"), None);
        let c = &r.transport.candidates[0];
        assert_eq!((c.component, c.generation, c.network), (1, 0, 0));
        assert_eq!(
            (c.foundation.as_str(), c.id.as_str(), c.protocol.as_str()),
            ("", "", "udp")
        );
        assert_eq!(c.kind, "host");
        assert_eq!(c.rel_addr, Some("0.0.0.0:0".parse().unwrap()));

        let mut v = v;
        v["transport"]["candidates"][0]["rel-port"] = json!(null);
        assert_eq!(
            missing_field(parse_answer(&v)),
            "transport.candidates[0].rel-port"
        );
        v["transport"]["candidates"][0]["rel-addr"] = json!("");
        assert_eq!(
            parse_answer(&v).unwrap().transport.candidates[0].rel_addr,
            None
        );
    }

    #[test]
    fn audio_helpers_read_the_audio_section() {
        let v = with(telegram_answer(), "/audio/payload-types/0/id", json!(109));
        let v = with(v, "/audio/payload-types/0/name", json!("OPUS"));
        let r = parse_answer(&v).unwrap();
        assert_eq!(r.opus_pt(), 109);
        assert_eq!(
            r.audio_payload_type("opus").map(|pt| pt.clockrate),
            Some(48000)
        );
        // VP8 lives in the video section only.
        assert_eq!(r.audio_payload_type("VP8"), None);
    }

    #[test]
    fn response_round_trips() {
        let r = parse_answer(&telegram_answer()).unwrap();
        let json = r.to_json();
        assert_eq!(JoinResponse::parse(json.as_bytes()).unwrap(), r);

        // Telegram's shape: strings for candidate numbers, numbers for ids and parameters.
        let emitted: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(emitted["transport"]["xmlns"], json!(XMLNS_ICE_UDP));
        assert_eq!(emitted["transport"]["rtcp-mux"], json!(true));
        assert_eq!(
            emitted["transport"]["candidates"],
            telegram_answer()["transport"]["candidates"]
        );
        assert_eq!(emitted["audio"], telegram_answer()["audio"]);
        assert_eq!(emitted["video"], telegram_answer()["video"]);

        let mut r = r;
        r.transport.candidates[0].rel_addr = Some("[2001:db8::1]:0".parse().unwrap());
        r.transport.candidates[0].foundation = "quote\" backslash\\ nl\n nul\u{0} é".into();
        r.transport.fingerprints[0].setup = String::new();
        r.video = None;
        r.audio.as_mut().unwrap().payload_types[0]
            .parameters
            .push(("zero".into(), "007".into()));
        assert_eq!(JoinResponse::parse(r.to_json().as_bytes()).unwrap(), r);
    }

    #[test]
    fn join_payload_to_json_is_the_section_1_shape() {
        let p = JoinPayload {
            ufrag: "Xq3b".into(),
            pwd: "pT0aQ1r2S3t4U5v6W7x8Y9z0".into(),
            fingerprints: vec![DtlsFingerprint {
                hash: "sha-256".into(),
                setup: "passive".into(),
                fingerprint: FP.into(),
            }],
            ssrc: Ssrc(1_234_567_890),
            ssrc_groups: vec![],
        };
        assert_eq!(
            p.to_json(),
            format!(
                r#"{{"ufrag":"Xq3b","pwd":"pT0aQ1r2S3t4U5v6W7x8Y9z0","fingerprints":[{{"hash":"sha-256","setup":"passive","fingerprint":"{FP}"}}],"ssrc":1234567890}}"#
            )
        );
        let p = JoinPayload {
            ssrc: Ssrc(0x8000_0001),
            ssrc_groups: vec![SsrcGroup {
                semantics: "FID".into(),
                sources: vec![Ssrc(u32::MAX), Ssrc(7)],
            }],
            ..p
        };
        let json = p.to_json();
        assert!(
            json.contains(
                r#""ssrc":-2147483647,"ssrc-groups":[{"semantics":"FID","sources":[-1,7]}]}"#
            ),
            "{json}"
        );
        assert_eq!(JoinPayload::parse(json.as_bytes()).unwrap(), p);
    }

    #[test]
    fn join_payload_parses_and_round_trips() {
        let p = parse_join(&join_value()).unwrap();
        assert_eq!(p.ssrc, Ssrc(1_234_567_890));
        assert_eq!(
            p.ssrc_groups[1].sources,
            vec![Ssrc(1_234_567_891), Ssrc(u32::MAX - 4)]
        );
        assert_eq!(JoinPayload::parse(p.to_json().as_bytes()).unwrap(), p);

        // ssrc as string, unsigned above i32::MAX, null/empty groups.
        let v = with(join_value(), "/ssrc", json!("4294967295"));
        let v = with(v, "/ssrc-groups", json!(null));
        let p = parse_join(&v).unwrap();
        assert_eq!((p.ssrc, p.ssrc_groups.len()), (Ssrc(u32::MAX), 0));
        let v = with(join_value(), "/ssrc", json!(-1));
        let v = with(v, "/ssrc-groups", json!([]));
        assert_eq!(parse_join(&v).unwrap().ssrc, Ssrc(u32::MAX));
        let v = without(join_value(), "/fingerprints/0", "setup");
        assert_eq!(parse_join(&v).unwrap().fingerprints[0].setup, "");
    }

    #[test]
    fn join_payload_rejects_bad_fields() {
        let cases = [
            ("/ssrc", json!(1.5), "ssrc"),
            ("/ssrc", json!(4_294_967_296_u64), "ssrc"),
            ("/ssrc", json!(-2_147_483_649_i64), "ssrc"),
            ("/ssrc", json!("12a"), "ssrc"),
            ("/ufrag", json!("abc"), "ufrag"),
            ("/ufrag", json!("abc:d"), "ufrag"),
            ("/ufrag", json!("x".repeat(257)), "ufrag"),
            ("/pwd", json!("tooshort"), "pwd"),
            ("/pwd", json!(5), "pwd"),
            ("/fingerprints", json!([]), "fingerprints"),
            ("/fingerprints", json!({}), "fingerprints"),
            (
                "/fingerprints/0/fingerprint",
                json!("not hex"),
                "fingerprints[0].fingerprint",
            ),
            ("/fingerprints/0/hash", json!(""), "fingerprints[0].hash"),
            ("/fingerprints/0/setup", json!(1), "fingerprints[0].setup"),
            (
                "/ssrc-groups/0/sources",
                json!([]),
                "ssrc-groups[0].sources",
            ),
            (
                "/ssrc-groups/1/sources/1",
                json!(true),
                "ssrc-groups[1].sources[1]",
            ),
            (
                "/ssrc-groups/1/semantics",
                json!(""),
                "ssrc-groups[1].semantics",
            ),
            ("/ssrc-groups/1", json!("FID"), "ssrc-groups[1]"),
        ];
        for (pointer, value, field) in cases {
            let v = with(join_value(), pointer, value.clone());
            assert_eq!(invalid_field(parse_join(&v)), field, "{pointer} = {value}");
        }
        for (pointer, key, field) in [
            ("", "ufrag", "ufrag"),
            ("", "pwd", "pwd"),
            ("", "ssrc", "ssrc"),
            ("", "fingerprints", "fingerprints"),
            (
                "/fingerprints/0",
                "fingerprint",
                "fingerprints[0].fingerprint",
            ),
            ("/fingerprints/0", "hash", "fingerprints[0].hash"),
            ("/ssrc-groups/0", "semantics", "ssrc-groups[0].semantics"),
        ] {
            let v = without(join_value(), pointer, key);
            assert_eq!(missing_field(parse_join(&v)), field);
        }
    }

    #[test]
    fn fingerprint_hex_round_trip() {
        let bytes = [0x00, 0xAB, 0x10, 0xFF];
        assert_eq!(fingerprint_hex(&bytes), "00:AB:10:FF");
        assert_eq!(parse_fingerprint_hex("00:ab:10:FF"), Some(bytes.to_vec()));
        assert_eq!(parse_fingerprint_hex("0:AB"), None);
        assert_eq!(parse_fingerprint_hex("+F:AB"), None);
        assert_eq!(parse_fingerprint_hex("ZZ"), None);
    }

    #[test]
    fn fingerprint_must_be_hex_bytes_of_the_hash_size() {
        let bad = [
            "0B:7C",             // 2 bytes for sha-256
            "0G:7C:1D",          // not hex
            "0B7C1D2E",          // no colons
            "0B:7C:",            // trailing colon
            "",                  // empty
            &FP[..FP.len() - 1], // last byte has one digit
        ];
        for fp in bad {
            let v = with(
                telegram_answer(),
                "/transport/fingerprints/0/fingerprint",
                json!(fp),
            );
            assert_eq!(
                invalid_field(parse_answer(&v)),
                "transport.fingerprints[0].fingerprint",
                "{fp:?}"
            );
        }
        // Lowercase hex and unknown hash names are fine; unknown hashes are not length-checked.
        let v = with(
            telegram_answer(),
            "/transport/fingerprints/0/fingerprint",
            json!(FP.to_lowercase()),
        );
        assert!(parse_answer(&v).is_ok());
        let v = with(
            telegram_answer(),
            "/transport/fingerprints/0/hash",
            json!("future-hash"),
        );
        let v = with(v, "/transport/fingerprints/0/fingerprint", json!("AB:CD"));
        assert!(parse_answer(&v).is_ok());
        let v = with(
            telegram_answer(),
            "/transport/fingerprints/0/hash",
            json!("SHA-1"),
        );
        assert_eq!(
            invalid_field(parse_answer(&v)),
            "transport.fingerprints[0].fingerprint"
        );
    }

    #[test]
    fn broken_json_is_invalid_json() {
        let full = telegram_answer().to_string();
        let truncated = &full.as_bytes()[..full.len() / 2];
        for input in [
            truncated,
            b"".as_slice(),
            b"   ",
            b"{\"transport\":",
            b"{} trailing",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(
                    JoinResponse::parse(input),
                    Err(SignalingError::InvalidJson { .. })
                ),
                "{input:?}"
            );
            assert!(matches!(
                JoinPayload::parse(input),
                Err(SignalingError::InvalidJson { .. })
            ));
        }
    }

    #[test]
    fn non_object_document_is_invalid_root() {
        for input in ["[]", "null", "42", "\"transport\"", "[{\"transport\":{}}]"] {
            assert_eq!(invalid_field(JoinResponse::parse(input.as_bytes())), "$");
            assert_eq!(invalid_field(JoinPayload::parse(input.as_bytes())), "$");
        }
    }

    #[test]
    fn oversized_input_is_rejected_before_parsing() {
        // Valid JSON padded with whitespace past the cap: rejected for its size alone.
        let mut input = telegram_answer().to_string().into_bytes();
        input.resize(MAX_SIGNALING_BYTES + 1, b' ');
        let err = JoinResponse::parse(&input).unwrap_err();
        assert_eq!(
            err,
            SignalingError::TooLarge {
                len: MAX_SIGNALING_BYTES + 1,
                max: MAX_SIGNALING_BYTES
            }
        );
        assert_eq!(JoinPayload::parse(&input).unwrap_err(), err);
        input.truncate(MAX_SIGNALING_BYTES);
        assert!(JoinResponse::parse(&input).is_ok());
    }

    #[test]
    fn missing_transport_or_rtc_alternatives() {
        assert_eq!(missing_field(JoinResponse::parse(b"{}")), "transport");
        assert_eq!(
            missing_field(JoinResponse::parse(b"{\"transport\":null,\"rtmp\":null}")),
            "transport"
        );
        assert_eq!(
            missing_field(JoinResponse::parse(b"{\"stream\":false}")),
            "transport"
        );
        assert_eq!(
            JoinResponse::parse(br#"{"rtmp":{"url":"rtmps://example.invalid"}}"#),
            Err(SignalingError::NoRtcTransport { kind: "rtmp" })
        );
        assert_eq!(
            JoinResponse::parse(br#"{"stream":true}"#),
            Err(SignalingError::NoRtcTransport { kind: "stream" })
        );
        // A usable transport wins over the flags.
        let mut v = telegram_answer();
        v["stream"] = json!(true);
        assert!(parse_answer(&v).is_ok());
        let v = with(telegram_answer(), "/transport", json!([]));
        assert_eq!(invalid_field(parse_answer(&v)), "transport");
    }

    #[test]
    fn missing_transport_fields_name_their_path() {
        for (pointer, key, field) in [
            ("/transport", "fingerprints", "transport.fingerprints"),
            ("/transport", "ufrag", "transport.ufrag"),
            ("/transport", "pwd", "transport.pwd"),
            ("/transport", "candidates", "transport.candidates"),
            (
                "/transport/fingerprints/0",
                "fingerprint",
                "transport.fingerprints[0].fingerprint",
            ),
            (
                "/transport/fingerprints/0",
                "hash",
                "transport.fingerprints[0].hash",
            ),
            (
                "/transport/candidates/1",
                "ip",
                "transport.candidates[1].ip",
            ),
            (
                "/transport/candidates/1",
                "port",
                "transport.candidates[1].port",
            ),
            (
                "/transport/candidates/1",
                "priority",
                "transport.candidates[1].priority",
            ),
            (
                "/transport/candidates/1",
                "type",
                "transport.candidates[1].type",
            ),
            ("/audio/payload-types/0", "id", "audio.payload-types[0].id"),
            (
                "/audio/payload-types/0",
                "name",
                "audio.payload-types[0].name",
            ),
            ("/video/rtp-hdrexts/1", "uri", "video.rtp-hdrexts[1].uri"),
        ] {
            let v = without(telegram_answer(), pointer, key);
            assert_eq!(missing_field(parse_answer(&v)), field);
        }
        let v = with(telegram_answer(), "/transport/fingerprints", json!([]));
        assert_eq!(invalid_field(parse_answer(&v)), "transport.fingerprints");
        let v = with(telegram_answer(), "/transport/candidates", json!([]));
        assert!(parse_answer(&v).unwrap().transport.candidates.is_empty());
    }

    #[test]
    fn invalid_values_name_their_path() {
        let port = "/transport/candidates/0/port";
        let cases = [
            (port, json!(true)),
            (port, json!([1])),
            (port, json!("abc")),
            (port, json!("")),
            (port, json!("+80")),
            (port, json!(" 80")),
            (port, json!(70000)),
            (port, json!("70000")),
            (port, json!(0)),
            (port, json!(80.5)),
            (port, json!({})),
            ("/transport/candidates/0/ip", json!("203.0.113")),
            ("/transport/candidates/0/ip", json!("example.org")),
            ("/transport/candidates/0/ip", json!("[2001:db8::1]")),
            ("/transport/candidates/0/ip", json!(3_405_803_786_u32)),
            ("/transport/candidates/0/component", json!(0)),
            ("/transport/candidates/0/component", json!("257")),
            ("/transport/candidates/0/generation", json!(-1)),
            ("/transport/candidates/0/network", json!("4294967296")),
            ("/transport/candidates/0/id", json!([])),
            ("/transport/candidates/0/foundation", json!(false)),
            ("/transport/candidates/0", json!("203.0.113.10 32001")),
            ("/transport/ufrag", json!("")),
            ("/transport/pwd", json!("p".repeat(257))),
            ("/audio/payload-types/0/id", json!(128)),
            ("/audio/payload-types/0/id", json!(-1)),
            ("/audio/payload-types/0/channels", json!(256)),
            ("/audio/payload-types/0/clockrate", json!("48k")),
            ("/audio/payload-types/0/name", json!("")),
            ("/audio/payload-types/0/parameters", json!([])),
            ("/audio/rtp-hdrexts/0/id", json!(15)),
            ("/audio/rtp-hdrexts/0/id", json!(0)),
            ("/audio/rtp-hdrexts/1/id", json!(1)),
            ("/audio/rtp-hdrexts/0/uri", json!("")),
            ("/video/payload-types/1/id", json!(100)),
            ("/video/server_sources/0", json!(1.0)),
            ("/video/endpoint", json!({})),
        ];
        for (pointer, value) in cases {
            let v = with(telegram_answer(), pointer, value.clone());
            let field = invalid_field(parse_answer(&v));
            let expected = pointer[1..]
                .split('/')
                .map(|seg| match seg.parse::<usize>() {
                    Ok(i) => format!("[{i}]"),
                    Err(_) => format!(".{seg}"),
                })
                .collect::<String>();
            assert_eq!(field, expected[1..], "{pointer} = {value}");
        }
        for (pointer, field) in [("/audio", "audio"), ("/video", "video")] {
            let v = with(telegram_answer(), pointer, json!("x"));
            assert_eq!(invalid_field(parse_answer(&v)), field);
        }
    }

    #[test]
    fn error_messages_are_readable() {
        let v = with(
            telegram_answer(),
            "/transport/candidates/0/port",
            json!("70000"),
        );
        assert_eq!(
            parse_answer(&v).unwrap_err().to_string(),
            "invalid field `transport.candidates[0].port`: \"70000\" is out of range 1..=65535"
        );
        let v = with(
            telegram_answer(),
            "/transport/candidates/0/port",
            json!(true),
        );
        assert_eq!(
            parse_answer(&v).unwrap_err().to_string(),
            "invalid field `transport.candidates[0].port`: expected an integer or a decimal string, found a boolean"
        );
        let long = "x".repeat(1000);
        let v = with(telegram_answer(), "/transport/candidates/0/ip", json!(long));
        assert!(parse_answer(&v).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn lists_are_capped() {
        let candidate = telegram_answer()["transport"]["candidates"][0].clone();
        let v = with(
            telegram_answer(),
            "/transport/candidates",
            json!(vec![candidate.clone(); MAX_LIST_ITEMS]),
        );
        assert_eq!(
            parse_answer(&v).unwrap().transport.candidates.len(),
            MAX_LIST_ITEMS
        );
        let v = with(
            telegram_answer(),
            "/transport/candidates",
            json!(vec![candidate; MAX_LIST_ITEMS + 1]),
        );
        assert_eq!(invalid_field(parse_answer(&v)), "transport.candidates");

        let pts: Vec<Value> = (0..=MAX_LIST_ITEMS)
            .map(|id| json!({"id": id, "name": "x"}))
            .collect();
        let v = with(telegram_answer(), "/audio/payload-types", json!(pts));
        assert_eq!(invalid_field(parse_answer(&v)), "audio.payload-types");
        let params: Map<String, Value> = (0..=MAX_LIST_ITEMS)
            .map(|i| (i.to_string(), json!(i)))
            .collect();
        let v = with(
            telegram_answer(),
            "/audio/payload-types/0/parameters",
            Value::Object(params),
        );
        assert_eq!(
            invalid_field(parse_answer(&v)),
            "audio.payload-types[0].parameters"
        );
        let v = with(
            join_value(),
            "/ssrc-groups/0/sources",
            json!(vec![1; MAX_LIST_ITEMS + 1]),
        );
        assert_eq!(invalid_field(parse_join(&v)), "ssrc-groups[0].sources");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!(
            "{{\"transport\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(matches!(
            JoinResponse::parse(deep.as_bytes()),
            Err(SignalingError::InvalidJson { .. })
        ));
    }

    #[test]
    fn canonical_unsigned_detection() {
        for s in ["0", "1", "10", "18446744073709551615"] {
            assert!(is_canonical_unsigned(s), "{s}");
        }
        for s in [
            "",
            "00",
            "01",
            "-1",
            "+1",
            "1.0",
            "18446744073709551616",
            " 1",
        ] {
            assert!(!is_canonical_unsigned(s), "{s}");
        }
    }

    // ---- property tests ---------------------------------------------------------------------

    const KEYS: &[&str] = &[
        "transport",
        "ufrag",
        "pwd",
        "fingerprints",
        "hash",
        "setup",
        "fingerprint",
        "candidates",
        "generation",
        "component",
        "protocol",
        "port",
        "ip",
        "foundation",
        "id",
        "priority",
        "type",
        "network",
        "rel-addr",
        "rel-port",
        "audio",
        "video",
        "payload-types",
        "name",
        "clockrate",
        "channels",
        "parameters",
        "rtcp-fbs",
        "subtype",
        "rtp-hdrexts",
        "uri",
        "endpoint",
        "server_sources",
        "ssrc",
        "ssrc-groups",
        "semantics",
        "sources",
        "rtmp",
        "stream",
        "xmlns",
    ];

    /// JSON values built from the keys and value shapes the parsers look for.
    fn json_ish() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (0u32..70_000).prop_map(Value::from),
            "-?[0-9]{0,22}".prop_map(Value::String),
            "[0-9a-fA-F:.]{0,20}".prop_map(Value::String),
            prop::sample::select(vec![
                "udp", "tcp", "host", "local", "relay", "opus", "sha-256", "nack pli"
            ])
            .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        let key = prop_oneof![
            3 => prop::sample::select(KEYS).prop_map(str::to_owned),
            1 => "[a-z-]{0,6}",
        ];
        leaf.prop_recursive(5, 96, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Replaces the leaves of `v` whose depth-first index is a key of `edits`.
    fn replace_leaves(v: &mut Value, counter: &mut usize, edits: &HashMap<usize, Value>) {
        match v {
            Value::Array(items) => items
                .iter_mut()
                .for_each(|x| replace_leaves(x, counter, edits)),
            Value::Object(map) => map
                .values_mut()
                .for_each(|x| replace_leaves(x, counter, edits)),
            leaf => {
                if let Some(new) = edits.get(counter) {
                    *leaf = new.clone();
                }
                *counter += 1;
            }
        }
    }

    fn fingerprint() -> impl Strategy<Value = DtlsFingerprint> {
        (
            prop::sample::select(vec![
                ("sha-256", 32),
                ("sha-1", 20),
                ("SHA-512", 64),
                ("x-new", 3),
            ]),
            prop::sample::select(vec!["", "active", "passive", "actpass"]),
        )
            .prop_flat_map(|((hash, len), setup)| {
                prop::collection::vec(any::<u8>(), len).prop_map(move |bytes| DtlsFingerprint {
                    hash: hash.to_owned(),
                    setup: setup.to_owned(),
                    fingerprint: bytes
                        .iter()
                        .map(|b| format!("{b:02X}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                })
            })
    }

    fn join_payload() -> impl Strategy<Value = JoinPayload> {
        (
            "[A-Za-z0-9+/]{4,40}",
            "[A-Za-z0-9+/]{22,64}",
            prop::collection::vec(fingerprint(), 1..3),
            any::<u32>(),
            prop::collection::vec(
                (
                    "\\PC{1,6}",
                    prop::collection::vec(any::<u32>().prop_map(Ssrc), 1..6),
                ),
                0..5,
            ),
        )
            .prop_map(|(ufrag, pwd, fingerprints, ssrc, groups)| JoinPayload {
                ufrag,
                pwd,
                fingerprints,
                ssrc: Ssrc(ssrc),
                ssrc_groups: groups
                    .into_iter()
                    .map(|(semantics, sources)| SsrcGroup { semantics, sources })
                    .collect(),
            })
    }

    fn candidate() -> impl Strategy<Value = IceCandidate> {
        (
            (
                "(?s).{0,8}",
                1..=ICE_COMPONENT_MAX,
                any::<u32>(),
                any::<IpAddr>(),
                1..=u16::MAX,
            ),
            prop::sample::select(vec!["host", "srflx", "prflx", "relay"]),
            (any::<u32>(), any::<u32>(), "(?s).{0,8}"),
            prop::option::of((any::<IpAddr>(), any::<u16>())),
        )
            .prop_map(
                |(
                    (foundation, component, priority, ip, port),
                    kind,
                    (generation, network, id),
                    rel,
                )| {
                    IceCandidate {
                        foundation,
                        component,
                        protocol: "udp".into(),
                        priority,
                        ip,
                        port,
                        kind: kind.into(),
                        generation,
                        network,
                        id,
                        rel_addr: rel.map(|(ip, port)| SocketAddr::new(ip, port)),
                    }
                },
            )
    }

    fn media() -> impl Strategy<Value = MediaDescription> {
        let feedback = ("[a-zA-Z0-9-]{1,10}", prop::option::of("(?s).{1,6}"))
            .prop_map(|(kind, subtype)| RtcpFeedback { kind, subtype });
        let pt = (
            "(?s).{1,8}",
            any::<u32>(),
            any::<u8>(),
            prop::collection::btree_map("(?s).{0,6}", "(?s).{0,6}|[0-9]{1,21}", 0..4),
            prop::collection::vec(feedback, 0..4),
        );
        (
            prop::collection::btree_map(0..=PAYLOAD_TYPE_MAX, pt, 0..5),
            prop::collection::btree_map(1u8..=14, "(?s).{1,20}", 0..5),
        )
            .prop_map(|(pts, exts)| MediaDescription {
                payload_types: pts
                    .into_iter()
                    .map(
                        |(id, (name, clockrate, channels, parameters, rtcp_fbs))| PayloadType {
                            id,
                            name,
                            clockrate,
                            channels,
                            parameters: parameters.into_iter().collect(),
                            rtcp_fbs,
                        },
                    )
                    .collect(),
                rtp_hdrexts: exts
                    .into_iter()
                    .map(|(id, uri)| HeaderExtension { id, uri })
                    .collect(),
            })
    }

    fn join_response() -> impl Strategy<Value = JoinResponse> {
        let transport = (
            "(?s).{1,20}",
            "(?s).{1,30}",
            prop::collection::vec(fingerprint(), 1..3),
            prop::collection::vec(candidate(), 0..5),
        )
            .prop_map(|(ufrag, pwd, fingerprints, candidates)| Transport {
                ufrag,
                pwd,
                fingerprints,
                candidates,
            });
        let video = (
            prop::option::of("(?s).{0,10}"),
            prop::collection::vec(any::<u32>().prop_map(Ssrc), 0..4),
            media(),
        )
            .prop_map(|(endpoint, server_sources, media)| VideoDescription {
                endpoint,
                server_sources,
                media,
            });
        (
            transport,
            prop::option::of(media()),
            prop::option::of(video),
        )
            .prop_map(|(transport, audio, video)| JoinResponse {
                transport,
                audio,
                video,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
            let _ = JoinResponse::parse(&bytes);
            let _ = JoinPayload::parse(&bytes);
        }

        #[test]
        fn json_ish_text_never_panics(text in "[\\[\\]{}\":,0-9a-z. -]{0,300}") {
            let _ = JoinResponse::parse(text.as_bytes());
            let _ = JoinPayload::parse(text.as_bytes());
        }

        #[test]
        fn arbitrary_json_never_panics_and_reparses(v in json_ish()) {
            let text = v.to_string();
            if let Ok(r) = JoinResponse::parse(text.as_bytes()) {
                prop_assert_eq!(JoinResponse::parse(r.to_json().as_bytes()), Ok(r));
            }
            if let Ok(p) = JoinPayload::parse(text.as_bytes()) {
                prop_assert_eq!(JoinPayload::parse(p.to_json().as_bytes()), Ok(p));
            }
        }

        #[test]
        fn mutated_documents_never_panic_and_reparse(
            edits in prop::collection::hash_map(0usize..90, json_ish(), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut answer = telegram_answer();
            replace_leaves(&mut answer, &mut 0, &edits);
            let text = answer.to_string();
            if let Ok(r) = JoinResponse::parse(text.as_bytes()) {
                prop_assert_eq!(JoinResponse::parse(r.to_json().as_bytes()), Ok(r));
            }
            let truncated = &text.as_bytes()[..cut.index(text.len() + 1)];
            let _ = JoinResponse::parse(truncated);

            let mut join = join_value();
            replace_leaves(&mut join, &mut 0, &edits);
            if let Ok(p) = JoinPayload::parse(join.to_string().as_bytes()) {
                prop_assert_eq!(JoinPayload::parse(p.to_json().as_bytes()), Ok(p));
            }
        }

        #[test]
        fn join_payload_round_trips(p in join_payload()) {
            prop_assert_eq!(JoinPayload::parse(p.to_json().as_bytes()), Ok(p));
        }

        #[test]
        fn join_response_round_trips(r in join_response()) {
            prop_assert_eq!(JoinResponse::parse(r.to_json().as_bytes()), Ok(r));
        }
    }
}
