//! Video: encoded frames, packetized once, sent by every call that plays them.
//!
//! A [`VideoSource`] hands out [`VideoFrame`]s: one encoded picture (a VP8 frame, or an H.264
//! access unit in Annex B form) already cut into RTP payloads. Packetizing happens once where
//! the frame is made, not per call: a thousand calls showing one picture clone a thousand
//! reference counts, and each call only writes its own RTP header (SSRC, sequence number,
//! timestamp) around the shared payloads.
//!
//! The parsers here read what ffmpeg writes: [`IvfStream`] (VP8 in IVF, `-f ivf`) and
//! [`AnnexBStream`] (H.264 Annex B with access unit delimiters, `-f h264 -bsf:v
//! h264_mp4toannexb` and x264's `aud=1`). Both are push parsers: the caller feeds whatever
//! bytes it read and takes out complete frames; malformed input is a typed
//! [`SourceError::Video`], never a panic. [`frame_info`] reads what a receiver needs to know
//! about a frame (keyframe, resolution) from the VP8 frame header or the H.264 SPS.
//!
//! Video RTP runs on a 90 kHz clock ([`VIDEO_CLOCK_RATE_HZ`], RFC 7741 §4.1, RFC 6184 §5.1).

use std::fmt;
use std::sync::Arc;

use str0m::unversioned::{H264Packetizer, Packetizer, Vp8Packetizer};

use super::SourceError;

/// The RTP clock rate of VP8 and H.264.
pub const VIDEO_CLOCK_RATE_HZ: u32 = 90_000;

/// Largest RTP payload a video packet carries: with the RTP header and the SRTP tag, a packet
/// stays under 1,200 bytes, which every path WebRTC runs on takes (str0m's default MTU target
/// is 1,150 bytes of UDP payload for handshake flights; media may use up to its packet limit).
pub const VIDEO_PAYLOAD_MTU: usize = 1_100;

/// Largest encoded frame accepted from a parser (8 MiB): a 4K keyframe is well below it; more
/// is a corrupt stream, not a picture.
pub const MAX_FRAME_BYTES: usize = 8 << 20;

/// The video codecs ringcast sends and Telegram's SFU forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264 (RFC 6184), packetization mode 1 (single NAL units, STAP-A, FU-A).
    H264,
}

impl VideoCodec {
    /// The name in a payload type's `name` field (`"VP8"`, `"H264"`), compared
    /// case-insensitively.
    pub fn rtp_name(self) -> &'static str {
        match self {
            Self::Vp8 => "VP8",
            Self::H264 => "H264",
        }
    }
}

impl fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rtp_name())
    }
}

/// What a receiver can tell about an encoded frame without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameInfo {
    /// The frame can be decoded on its own (a VP8 key frame, an H.264 IDR access unit).
    pub keyframe: bool,
    /// Picture width and height, when the frame says (VP8 key frames; H.264 access units that
    /// carry an SPS).
    pub size: Option<(u16, u16)>,
}

/// One encoded picture, cut into RTP payloads. Cheap to clone (reference counts).
#[derive(Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// The RTP payloads in order; the last one carries the marker bit. Shared by every call.
    pub payloads: Arc<[Arc<[u8]>]>,
    /// True for a frame that decodes on its own (see [`FrameInfo::keyframe`]).
    pub keyframe: bool,
    /// How long the picture is shown, in 90 kHz ticks: the RTP timestamp of the next frame is
    /// this much later.
    pub duration_90k: u32,
    /// Bytes of the encoded frame (before packetizing).
    pub encoded_bytes: usize,
}

impl fmt::Debug for VideoFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideoFrame")
            .field("packets", &self.payloads.len())
            .field("keyframe", &self.keyframe)
            .field("duration_90k", &self.duration_90k)
            .field("encoded_bytes", &self.encoded_bytes)
            .finish()
    }
}

impl VideoFrame {
    /// Packetizes one encoded frame of `codec` (a VP8 frame, or an Annex B H.264 access unit)
    /// into payloads of at most [`VIDEO_PAYLOAD_MTU`] bytes.
    ///
    /// # Errors
    /// [`SourceError::Video`] for an empty frame, one above [`MAX_FRAME_BYTES`], or one the
    /// packetizer cannot cut.
    pub fn packetize(
        codec: VideoCodec,
        data: &[u8],
        duration_90k: u32,
    ) -> Result<Self, SourceError> {
        if data.is_empty() || data.len() > MAX_FRAME_BYTES {
            return Err(SourceError::video(format!(
                "{codec} frame of {} bytes (1..={MAX_FRAME_BYTES} expected)",
                data.len()
            )));
        }
        let info = frame_info(codec, data);
        let payloads = match codec {
            VideoCodec::Vp8 => Vp8Packetizer::default().packetize(VIDEO_PAYLOAD_MTU, data),
            VideoCodec::H264 => H264Packetizer::default().packetize(VIDEO_PAYLOAD_MTU, data),
        }
        .map_err(|e| SourceError::video(format!("packetizing a {codec} frame: {e}")))?;
        if payloads.is_empty() {
            return Err(SourceError::video(format!(
                "{codec} frame of {} bytes gave no packets",
                data.len()
            )));
        }
        Ok(Self {
            payloads: payloads.into_iter().map(Arc::from).collect(),
            keyframe: info.keyframe,
            duration_90k,
            encoded_bytes: data.len(),
        })
    }
}

/// What [`VideoSource::next_frame`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoPoll {
    /// The next picture.
    Frame(VideoFrame),
    /// None ready yet (a live decode behind): ask again shortly. Counted as an underrun.
    Pending,
    /// The stream is over.
    End,
}

/// A producer of encoded video frames, pulled by the call at the pace of their durations.
///
/// As [`super::FrameSource`]: never blocks, never reads a clock. `Send` so a source can be
/// built on one thread and moved to the shard that owns the call.
pub trait VideoSource: Send {
    /// The codec of the frames.
    fn codec(&self) -> VideoCodec;

    /// The next frame, [`VideoPoll::Pending`] if none is ready, or [`VideoPoll::End`].
    ///
    /// # Errors
    /// The source failed; it is finished.
    fn next_frame(&mut self) -> Result<VideoPoll, SourceError>;

    /// A receiver lost the picture (RTCP PLI or FIR): the source should produce a key frame
    /// soon. Sources shared by many calls coalesce these. The default ignores it (a source of
    /// frequent key frames).
    fn request_keyframe(&mut self) {}

    /// Frames ready beyond the one just taken that are already due: a reader of a shared
    /// stream that started (or restarted, on a key frame request) at the last key frame it
    /// keeps, behind the live edge. The track sends these at once, to catch up. Zero by
    /// default.
    fn backlog(&self) -> usize {
        0
    }
}

/// Reads [`FrameInfo`] from an encoded frame: the VP8 frame tag and key frame header
/// (RFC 6386 §9.1), or the NAL units of an H.264 access unit (IDR slice = key frame; the SPS
/// gives the size). Never fails: what cannot be read is left out.
pub fn frame_info(codec: VideoCodec, data: &[u8]) -> FrameInfo {
    match codec {
        VideoCodec::Vp8 => vp8_frame_info(data),
        VideoCodec::H264 => {
            let mut info = FrameInfo::default();
            for nal in annexb_nal_units(data) {
                match nal.first().map(|b| b & 0x1f) {
                    Some(5) => info.keyframe = true,
                    Some(7) => info.size = info.size.or_else(|| h264_sps_size(nal)),
                    _ => {}
                }
            }
            info
        }
    }
}

/// RFC 6386 §9.1: a 3-byte frame tag (bit 0 of the first byte is 0 for a key frame), then for
/// key frames the start code 9d 01 2a and two little-endian 16-bit fields whose low 14 bits are
/// the width and the height.
fn vp8_frame_info(data: &[u8]) -> FrameInfo {
    let Some(&tag) = data.first() else {
        return FrameInfo::default();
    };
    if tag & 1 != 0 {
        return FrameInfo::default();
    }
    let size = match data.get(3..10) {
        Some([0x9d, 0x01, 0x2a, w0, w1, h0, h1]) => Some((
            u16::from_le_bytes([*w0, *w1]) & 0x3fff,
            u16::from_le_bytes([*h0, *h1]) & 0x3fff,
        )),
        _ => None,
    };
    FrameInfo {
        keyframe: size.is_some(),
        size,
    }
}

/// The NAL units of an Annex B byte stream (start codes 00 00 01 or 00 00 00 01), without
/// their start codes. Bytes before the first start code are skipped.
pub fn annexb_nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // The next unit's start code begins 3 bytes before its payload; a 4-byte start
            // code's leading zero belongs to it too.
            let mut end = s - 3;
            if end > 0 && data[end - 1] == 0 {
                end -= 1;
            }
            end
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| &data[s..e])
}

/// Reads the picture size from an H.264 sequence parameter set (ITU-T H.264 §7.3.2.1.1),
/// NAL header byte first. `None` for an SPS it cannot follow.
fn h264_sps_size(nal: &[u8]) -> Option<(u16, u16)> {
    // Emulation prevention: 00 00 03 -> 00 00.
    let mut rbsp = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, reserved bits, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bits(1)?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bits(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bits(1)? == 1 {
            // seq_scaling_matrix_present_flag: skip the scaling lists.
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bits(1)? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bits(1)?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.bits(1)?;
    if frame_mbs_only == 0 {
        r.bits(1)?; // mb_adaptive_frame_field_flag
    }
    r.bits(1)?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0u64, 0u64);
    if r.bits(1)? == 1 {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        let (unit_x, unit_y) = match chroma_format_idc {
            0 => (1, 2 - u64::from(frame_mbs_only)),
            1 => (2, 2 * (2 - u64::from(frame_mbs_only))),
            2 => (2, 2 - u64::from(frame_mbs_only)),
            _ => (1, 2 - u64::from(frame_mbs_only)),
        };
        crop_x = unit_x * (u64::from(left) + u64::from(right));
        crop_y = unit_y * (u64::from(top) + u64::from(bottom));
    }
    let width = (width_mbs * 16).checked_sub(crop_x)?;
    let height = ((2 - u64::from(frame_mbs_only)) * height_map_units * 16).checked_sub(crop_y)?;
    Some((u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

/// Reads bits MSB first and Exp-Golomb codes.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Unsigned Exp-Golomb (`ue(v)`), up to 31 leading zeros.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// Signed Exp-Golomb (`se(v)`).
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// A push parser of IVF (the container ffmpeg writes VP8 into with `-f ivf`): a 32-byte file
/// header (`DKIF`, the fourcc, width, height, time base), then frames of a 12-byte header
/// (size, 64-bit timestamp) and the frame.
#[derive(Debug, Default)]
pub struct IvfStream {
    buf: Vec<u8>,
    header: Option<IvfHeader>,
}

/// The IVF file header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvfHeader {
    /// The codec's fourcc (`VP80` for VP8).
    pub fourcc: [u8; 4],
    /// Picture width the file announces.
    pub width: u16,
    /// Picture height the file announces.
    pub height: u16,
    /// Time base numerator and denominator: a timestamp of `t` is `t * num / den` seconds.
    pub time_base: (u32, u32),
}

/// One frame read from an IVF stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvfFrame {
    /// Its timestamp, in the header's time base.
    pub pts: u64,
    /// The encoded frame.
    pub data: Vec<u8>,
}

impl IvfStream {
    /// An empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// The file header, once read.
    pub fn header(&self) -> Option<IvfHeader> {
        self.header
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// [`SourceError::Video`] for a stream that is not IVF, a zero time base or a frame above
    /// [`MAX_FRAME_BYTES`]; the stream is unusable after it.
    pub fn next_frame(&mut self) -> Result<Option<IvfFrame>, SourceError> {
        if self.header.is_none() {
            if self.buf.len() < 32 {
                return Ok(None);
            }
            if &self.buf[..4] != b"DKIF" {
                return Err(SourceError::video("not an IVF stream (no DKIF signature)"));
            }
            let u16_at = |i: usize| u16::from_le_bytes([self.buf[i], self.buf[i + 1]]);
            let u32_at = |i: usize| {
                u32::from_le_bytes([
                    self.buf[i],
                    self.buf[i + 1],
                    self.buf[i + 2],
                    self.buf[i + 3],
                ])
            };
            let header_len = usize::from(u16_at(6)).max(32);
            if self.buf.len() < header_len {
                return Ok(None);
            }
            // The header's rate field is the denominator of the time base (frames per
            // second for a constant-rate file), its scale field the numerator.
            let time_base = (u32_at(20), u32_at(16));
            if time_base.0 == 0 || time_base.1 == 0 {
                return Err(SourceError::video("IVF header with a zero time base"));
            }
            self.header = Some(IvfHeader {
                fourcc: [self.buf[8], self.buf[9], self.buf[10], self.buf[11]],
                width: u16_at(12),
                height: u16_at(14),
                time_base,
            });
            self.buf.drain(..header_len);
        }
        if self.buf.len() < 12 {
            return Ok(None);
        }
        let size =
            u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if size > MAX_FRAME_BYTES {
            return Err(SourceError::video(format!(
                "IVF frame of {size} bytes (at most {MAX_FRAME_BYTES})"
            )));
        }
        if self.buf.len() < 12 + size {
            return Ok(None);
        }
        let mut pts = [0u8; 8];
        pts.copy_from_slice(&self.buf[4..12]);
        let data = self.buf[12..12 + size].to_vec();
        self.buf.drain(..12 + size);
        Ok(Some(IvfFrame {
            pts: u64::from_le_bytes(pts),
            data,
        }))
    }

    /// Bytes pushed but not yet returned as a frame (a stream that ends with some is
    /// truncated).
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }
}

/// A push parser that splits an H.264 Annex B stream into access units at its access unit
/// delimiters (NAL type 9; x264 writes them with `aud=1`). Each access unit is returned with
/// its start codes, ready for [`VideoFrame::packetize`].
#[derive(Debug, Default)]
pub struct AnnexBStream {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a delimiter.
    scanned: usize,
}

impl AnnexBStream {
    /// An empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete access unit (the delimiter that starts the following one has
    /// arrived), `Ok(None)` if more bytes are needed. [`AnnexBStream::finish`] returns the last.
    ///
    /// # Errors
    /// [`SourceError::Video`] when an access unit grows beyond [`MAX_FRAME_BYTES`].
    pub fn next_access_unit(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        // The first delimiter starts the current unit; find the one after it.
        let Some(first) = find_aud(&self.buf, 0) else {
            self.check_size()?;
            return Ok(None);
        };
        let from = self.scanned.max(first + 4);
        match find_aud(&self.buf, from) {
            Some(next) => {
                let unit = self.buf[first..next].to_vec();
                self.buf.drain(..next);
                self.scanned = 0;
                Ok(Some(unit))
            }
            None => {
                self.scanned = self.buf.len().saturating_sub(4).max(first + 4);
                self.check_size()?;
                Ok(None)
            }
        }
    }

    /// The last access unit of an ended stream, if any bytes remain.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let start = find_aud(&self.buf, 0).unwrap_or(0);
        let unit = self.buf.split_off(start);
        self.buf.clear();
        self.scanned = 0;
        let has_nal = annexb_nal_units(&unit).next().is_some();
        has_nal.then_some(unit)
    }

    fn check_size(&self) -> Result<(), SourceError> {
        if self.buf.len() > MAX_FRAME_BYTES {
            return Err(SourceError::video(format!(
                "H.264 access unit beyond {MAX_FRAME_BYTES} bytes (no access unit delimiters?)"
            )));
        }
        Ok(())
    }
}

/// Position of the start code (3 bytes 00 00 01, with a leading 00 if present) of the next
/// access unit delimiter NAL (type 9) at or after `from`.
fn find_aud(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 4 <= buf.len() {
        if buf[i] == 0 && buf[i + 1] == 0 && buf[i + 2] == 1 && buf[i + 3] & 0x1f == 9 {
            return Some(if i > 0 && buf[i - 1] == 0 { i - 1 } else { i });
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 key frame header for `w`x`h` (frame tag, start code, sizes) and some bytes.
    fn vp8_key(w: u16, h: u16) -> Vec<u8> {
        let mut f = vec![0x50, 0x2d, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&w.to_le_bytes());
        f.extend_from_slice(&h.to_le_bytes());
        f.extend(std::iter::repeat_n(0xab, 3_000));
        f
    }

    #[test]
    fn vp8_key_frame_size_and_inter_frames() {
        let info = frame_info(VideoCodec::Vp8, &vp8_key(1280, 720));
        assert_eq!(
            info,
            FrameInfo {
                keyframe: true,
                size: Some((1280, 720))
            }
        );
        let inter = [0x31, 0x02, 0x00, 1, 2, 3];
        assert_eq!(frame_info(VideoCodec::Vp8, &inter), FrameInfo::default());
        assert_eq!(frame_info(VideoCodec::Vp8, &[]), FrameInfo::default());
        assert_eq!(
            frame_info(VideoCodec::Vp8, &[0x50, 1]),
            FrameInfo::default()
        );
    }

    #[test]
    fn packetizing_cuts_at_the_mtu_and_keeps_every_byte() {
        let frame = vp8_key(1280, 720);
        let f = VideoFrame::packetize(VideoCodec::Vp8, &frame, 3_000).expect("packetize");
        assert!(f.keyframe);
        assert_eq!(f.payloads.len(), 3);
        assert!(f.payloads.iter().all(|p| p.len() <= VIDEO_PAYLOAD_MTU));
        // One byte of VP8 payload descriptor per packet, the rest is the frame.
        let body: Vec<u8> = f.payloads.iter().flat_map(|p| p[1..].to_vec()).collect();
        assert_eq!(body, frame);
        assert!(matches!(
            VideoFrame::packetize(VideoCodec::Vp8, &[], 1),
            Err(SourceError::Video { .. })
        ));
    }

    /// SPS of a 1280x720 High profile stream, as x264 (ffmpeg's libx264) wrote it.
    const SPS_720P: [u8; 26] = [
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];

    fn h264_au(idr: bool) -> Vec<u8> {
        let mut au = vec![0, 0, 0, 1, 0x09, 0xf0];
        if idr {
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(&SPS_720P);
            au.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0]);
            au.extend_from_slice(&[0, 0, 1, 0x65]);
        } else {
            au.extend_from_slice(&[0, 0, 1, 0x41]);
        }
        au.extend(std::iter::repeat_n(0x88, 2_500));
        au
    }

    #[test]
    fn h264_idr_and_sps_size() {
        let info = frame_info(VideoCodec::H264, &h264_au(true));
        assert_eq!(
            info,
            FrameInfo {
                keyframe: true,
                size: Some((1280, 720))
            }
        );
        assert_eq!(
            frame_info(VideoCodec::H264, &h264_au(false)),
            FrameInfo::default()
        );
        // A truncated SPS gives no size (or, once the size fields are in, the right one),
        // never a panic or a wrong size.
        for n in 0..SPS_720P.len() {
            let mut au = vec![0, 0, 1];
            au.extend_from_slice(&SPS_720P[..n]);
            let size = frame_info(VideoCodec::H264, &au).size;
            assert!(size.is_none() || size == Some((1280, 720)), "{n}: {size:?}");
            assert!(n >= 8 || size.is_none(), "{n}: {size:?}");
        }
    }

    #[test]
    fn annexb_stream_splits_at_delimiters_whatever_the_reads() {
        let units = [h264_au(true), h264_au(false), h264_au(false)];
        let stream: Vec<u8> = units.concat();
        for chunk in [1, 7, 1_000, stream.len()] {
            let mut p = AnnexBStream::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                p.push(piece);
                while let Some(u) = p.next_access_unit().expect("parse") {
                    got.push(u);
                }
            }
            got.extend(p.finish());
            assert_eq!(got, units, "chunk {chunk}");
        }
    }

    #[test]
    fn annexb_without_delimiters_is_bounded() {
        let mut p = AnnexBStream::new();
        let junk = vec![0x55; MAX_FRAME_BYTES + 1];
        p.push(&junk);
        assert!(matches!(
            p.next_access_unit(),
            Err(SourceError::Video { .. })
        ));
    }

    fn ivf(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"DKIF".to_vec();
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&32u16.to_le_bytes());
        out.extend_from_slice(b"VP80");
        out.extend_from_slice(&1280u16.to_le_bytes());
        out.extend_from_slice(&720u16.to_le_bytes());
        out.extend_from_slice(&30u32.to_le_bytes()); // rate (denominator)
        out.extend_from_slice(&1u32.to_le_bytes()); // scale (numerator)
        out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for (i, f) in frames.iter().enumerate() {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(&(i as u64).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn ivf_frames_and_header_whatever_the_reads() {
        let frames = vec![vp8_key(1280, 720), vec![0x31, 2, 0, 9, 9], vec![0x31, 1, 0]];
        let bytes = ivf(&frames);
        for chunk in [1, 5, 13, bytes.len()] {
            let mut p = IvfStream::new();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                p.push(piece);
                while let Some(f) = p.next_frame().expect("ivf") {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3, "chunk {chunk}");
            assert_eq!(got[2].pts, 2);
            assert_eq!(got[1].data, frames[1]);
            let h = p.header().expect("header");
            assert_eq!((h.width, h.height, h.time_base), (1280, 720, (1, 30)));
            assert_eq!(&h.fourcc, b"VP80");
        }
    }

    #[test]
    fn ivf_rejects_what_is_not_ivf() {
        let mut p = IvfStream::new();
        p.push(&[0u8; 40]);
        assert!(matches!(p.next_frame(), Err(SourceError::Video { .. })));
        let mut bytes = ivf(&[]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        let mut p = IvfStream::new();
        p.push(&bytes);
        assert!(matches!(p.next_frame(), Err(SourceError::Video { .. })));
    }
}
