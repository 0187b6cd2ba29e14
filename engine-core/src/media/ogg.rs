//! Ogg/Opus files (RFC 7845): a passthrough reader and a writer.
//!
//! [`OggOpusReader`] hands out the Opus packets stored in a file exactly as they are, without
//! decoding or re-encoding: one parse serves any number of calls, and the audio reaches Telegram
//! bit for bit as the encoder made it. The whole file is held in one [`Bytes`]; a packet that lies
//! inside one Ogg page is a zero-copy slice of it, and only a packet spanning pages is copied.
//!
//! The parser follows smoltcp's rule for untrusted input: every length is checked before it is
//! used, nothing is indexed unchecked, and no input can make it panic (a proptest and a fuzz
//! target feed it arbitrary bytes). Malformed input is a [`SourceError::Ogg`] with the byte offset
//! of the offending page, or [`SourceError::NotOpus`] when the container is fine but the stream
//! is not usable Opus.
//!
//! This crate does no I/O: [`OggOpusReader::new`] takes bytes already in memory and
//! [`OggOpusReader::from_reader`] reads from whatever the caller opened. Opening a path is the
//! runtime's job.
//!
//! [`OggOpusWriter`] produces the files the reader reads, for fixtures, tests and tools.
//!
//! # Page layout (RFC 3533 §6)
//!
//! ```text
//!  0..4   capture pattern "OggS"        14..18 bitstream serial number (LE)
//!  4      stream structure version = 0  18..22 page sequence number (LE)
//!  5      header type flags             22..26 CRC-32 of the page, this field zeroed (LE)
//!  6..14  granule position (LE)         26     number of segments n
//!                                       27..27+n  lacing values; the body follows
//! ```
//!
//! A packet is a run of lacing values of 255 ended by one below 255; a run still open at the end
//! of a page continues on the next page of the stream, which sets the "continued" flag.

use std::io::Read;

use std::sync::Arc;

use bytes::Bytes;

use super::{FrameSource, OpusFrame, SourceError, toc_duration_samples};

/// RFC 6464 audio level given to passed-through packets: -30 dBov, with the voice-activity flag
/// set.
///
/// The real level is unknown without decoding, which passthrough exists to avoid. The header
/// extension must still be present: Telegram's SFU picks the active speakers from it, and a
/// participant without it (or at 127, silence) is not shown as speaking. -30 dBov is a moderate
/// speech level (RFC 7874 §4 puts active speech at about -19 dBm0), so the stream reads as someone
/// talking without claiming to be the loudest in the room.
pub const PASSTHROUGH_AUDIO_LEVEL: u8 = 30;

/// Ogg capture pattern that starts every page (RFC 3533 §6).
const CAPTURE_PATTERN: [u8; 4] = *b"OggS";

/// Length of the fixed part of a page header, before the lacing values (RFC 3533 §6).
const PAGE_HEADER_LEN: usize = 27;

/// Byte offset of the header-type flags within a page.
const HEADER_TYPE_OFFSET: usize = 5;

/// Byte offset of the CRC field within a page.
const CRC_OFFSET: usize = 22;

/// Header type flag: the page starts with the continuation of a packet from the previous page.
const FLAG_CONTINUED: u8 = 0x01;

/// Header type flag: first page of a logical bitstream ("beginning of stream").
const FLAG_BOS: u8 = 0x02;

/// Header type flag: last page of a logical bitstream ("end of stream").
const FLAG_EOS: u8 = 0x04;

/// A lacing value of 255 means "the packet continues in the next segment" (RFC 3533 §5).
const LACING_CONTINUES: u8 = 255;

/// Most lacing values one page can hold: the segment count is one byte.
const MAX_SEGMENTS_PER_PAGE: usize = 255;

/// Granule position of a page on which no packet ends (RFC 3533 §6: -1).
const GRANULE_NONE: u64 = u64::MAX;

/// Magic signature of the Opus identification header (RFC 7845 §5.1).
const OPUS_HEAD_MAGIC: &[u8; 8] = b"OpusHead";

/// Magic signature of the Opus comment header (RFC 7845 §5.2).
const OPUS_TAGS_MAGIC: &[u8; 8] = b"OpusTags";

/// Length of an `OpusHead` packet with channel mapping family 0 (RFC 7845 §5.1).
const OPUS_HEAD_MIN_LEN: usize = 19;

/// CRC-32 lookup table for the Ogg checksum: polynomial 0x04C11DB7, not reflected, initial value 0,
/// no final XOR (RFC 3533 §6, "CRC checksum"), built at compile time.
const CRC_TABLE: [u32; 256] = crc_table();

/// Builds [`CRC_TABLE`].
const fn crc_table() -> [u32; 256] {
    let mut table = [0_u32; 256];
    let mut i = 0;
    while i < 256 {
        // `i < 256`, so the cast is lossless.
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04C1_1DB7
            } else {
                r << 1
            };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
}

/// Feeds `bytes` into the Ogg CRC-32 `crc`.
fn crc_update(crc: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(crc, |crc, &b| {
        // The table has 256 entries and the index is a `u8`: always in bounds.
        let index = usize::from((crc >> 24) as u8 ^ b);
        (crc << 8) ^ CRC_TABLE[index]
    })
}

/// CRC of a whole page, computed as if its CRC field were zero.
fn page_crc(page: &[u8]) -> u32 {
    let head = page.get(..CRC_OFFSET).unwrap_or(page);
    let tail = page.get(CRC_OFFSET + 4..).unwrap_or(&[]);
    let crc = crc_update(0, head);
    let crc = crc_update(crc, &[0; 4]);
    crc_update(crc, tail)
}

/// `N` bytes of `data` at `at`, or `None` if they are not all there.
fn read_array<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Builds a [`SourceError::Ogg`] for the page at `offset`.
fn ogg_error(offset: usize, reason: impl Into<String>) -> SourceError {
    SourceError::Ogg {
        // usize is at most 64 bits on every target Rust supports.
        offset: u64::try_from(offset).unwrap_or(u64::MAX),
        reason: reason.into(),
    }
}

/// Builds a [`SourceError::NotOpus`].
fn not_opus(reason: impl Into<String>) -> SourceError {
    SourceError::NotOpus {
        reason: reason.into(),
    }
}

/// One validated page: every range in it lies inside the buffer it was parsed from.
#[derive(Clone, Copy, Debug)]
struct Page {
    /// Offset of the capture pattern.
    offset: usize,
    /// Header type flags (`FLAG_*`).
    header_type: u8,
    /// Bitstream serial number.
    serial: u32,
    /// Page sequence number within its bitstream.
    sequence: u32,
    /// Offset of the first lacing value.
    lacing_start: usize,
    /// Number of lacing values.
    segments: usize,
    /// Offset of the first body byte.
    body_start: usize,
    /// Offset one past the last body byte: where the next page starts.
    end: usize,
}

impl Page {
    /// Parses and checks the page at `offset`; `Ok(None)` when `offset` is the end of `data`.
    ///
    /// Checks the capture pattern, version 0, the reserved flag bits, that the lacing values and
    /// the body are all present, and the CRC.
    fn parse(data: &[u8], offset: usize) -> Result<Option<Self>, SourceError> {
        if offset >= data.len() {
            return Ok(None);
        }
        let Some(header) = read_array::<PAGE_HEADER_LEN>(data, offset) else {
            return Err(ogg_error(offset, "truncated page header"));
        };
        // The fixed fields at their RFC 3533 §6 offsets, by destructuring: no index can fail.
        #[rustfmt::skip]
        let [
            c0, c1, c2, c3, version, header_type,
            _, _, _, _, _, _, _, _, // granule position: passthrough does not need it
            s0, s1, s2, s3,
            q0, q1, q2, q3,
            k0, k1, k2, k3,
            segment_count,
        ] = header;
        if [c0, c1, c2, c3] != CAPTURE_PATTERN {
            return Err(ogg_error(offset, "missing capture pattern \"OggS\""));
        }
        if version != 0 {
            return Err(ogg_error(
                offset,
                format!("unsupported stream structure version {version}"),
            ));
        }
        if header_type & !(FLAG_CONTINUED | FLAG_BOS | FLAG_EOS) != 0 {
            return Err(ogg_error(
                offset,
                format!("reserved header type bits set: {header_type:#04x}"),
            ));
        }
        let segments = usize::from(segment_count);
        let lacing_start = offset + PAGE_HEADER_LEN;
        let Some(lacing) = data.get(lacing_start..lacing_start + segments) else {
            return Err(ogg_error(offset, "truncated segment table"));
        };
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let body_start = lacing_start + segments;
        let end = body_start + body_len;
        let Some(page) = data.get(offset..end) else {
            return Err(ogg_error(
                offset,
                format!(
                    "truncated page body: {body_len} bytes announced, {} present",
                    data.len().saturating_sub(body_start)
                ),
            ));
        };
        let stored_crc = u32::from_le_bytes([k0, k1, k2, k3]);
        let computed_crc = page_crc(page);
        if stored_crc != computed_crc {
            return Err(ogg_error(
                offset,
                format!(
                    "crc mismatch: page says {stored_crc:#010x}, content is {computed_crc:#010x}"
                ),
            ));
        }
        Ok(Some(Self {
            offset,
            header_type,
            serial: u32::from_le_bytes([s0, s1, s2, s3]),
            sequence: u32::from_le_bytes([q0, q1, q2, q3]),
            lacing_start,
            segments,
            body_start,
            end,
        }))
    }

    fn has(&self, flag: u8) -> bool {
        self.header_type & flag != 0
    }

    /// Lacing value `index` of this page.
    fn lacing(&self, data: &[u8], index: usize) -> Option<u8> {
        if index >= self.segments {
            return None;
        }
        data.get(self.lacing_start + index).copied()
    }
}

/// The fields of an `OpusHead` identification header that matter here (RFC 7845 §5.1).
#[derive(Clone, Copy, Debug)]
struct OpusHead {
    channels: u8,
    pre_skip: u16,
    input_sample_rate_hz: u32,
}

impl OpusHead {
    /// Parses and checks an `OpusHead` packet.
    fn parse(packet: &[u8]) -> Result<Self, SourceError> {
        let Some(fixed) = read_array::<OPUS_HEAD_MIN_LEN>(packet, 0) else {
            return Err(not_opus(format!(
                "OpusHead is {} bytes, at least {OPUS_HEAD_MIN_LEN} expected",
                packet.len()
            )));
        };
        #[rustfmt::skip]
        let [
            _, _, _, _, _, _, _, _, // "OpusHead", checked by the caller
            version, channels, p0, p1, r0, r1, r2, r3,
            _, _, // output gain: a passthrough cannot apply it
            mapping_family,
        ] = fixed;
        // RFC 7845 §5.1: version 1 today; readers accept any version whose upper four bits are 0
        // (backwards compatible revisions) and reject the rest.
        if version & 0xf0 != 0 {
            return Err(not_opus(format!("unsupported OpusHead version {version}")));
        }
        if channels == 0 {
            return Err(not_opus("OpusHead with zero channels"));
        }
        if mapping_family == 0 {
            // RFC 7845 §5.1.1.1: family 0 is mono or stereo, one Opus stream, no mapping table.
            if channels > 2 {
                return Err(not_opus(format!(
                    "channel mapping family 0 allows 1 or 2 channels, header says {channels}"
                )));
            }
        } else {
            // Other families carry a mapping table: stream count, coupled count, one byte per
            // channel (RFC 7845 §5.1.1).
            let Some([streams, coupled]) = read_array::<2>(packet, OPUS_HEAD_MIN_LEN) else {
                return Err(not_opus("OpusHead channel mapping table is truncated"));
            };
            let table_end = OPUS_HEAD_MIN_LEN + 2 + usize::from(channels);
            if packet.len() < table_end || streams == 0 || coupled > streams {
                return Err(not_opus("OpusHead channel mapping table is invalid"));
            }
            // More than one stream means multistream packets (RFC 7845 Appendix B framing),
            // which WebRTC's `opus/48000/2` cannot carry.
            if streams != 1 {
                return Err(not_opus(format!(
                    "{streams} opus streams (multistream) cannot be passed through"
                )));
            }
        }
        Ok(Self {
            channels,
            pre_skip: u16::from_le_bytes([p0, p1]),
            input_sample_rate_hz: u32::from_le_bytes([r0, r1, r2, r3]),
        })
    }
}

/// Where [`OggOpusReader`] is in its stream.
#[derive(Clone, Debug)]
enum ReadState {
    /// More packets may follow.
    Reading,
    /// The end of the stream was reached; every further call returns `Ok(None)`.
    Ended,
    /// Reading failed; every further call returns this error again.
    Failed(SourceError),
}

/// A [`FrameSource`] that passes the packets of an in-memory Ogg/Opus file through unchanged.
///
/// Reads the first logical stream whose beginning-of-stream page carries an `OpusHead` header
/// (RFC 7845 §3); pages of other streams (a video track, a second audio track) are checked and
/// skipped, and the stream ends at that stream's end-of-stream page, so chained links after it
/// are not read. `OpusTags` is required and skipped.
///
/// What passthrough cannot honour: the header's pre-skip (the receiver decodes and plays the few
/// milliseconds of encoder priming), its output gain, and end trimming by the last granule
/// position (RTP has no way to say "play only part of this packet"). The container structure is
/// checked strictly: capture pattern, version, CRC, page sequence numbers, continuation flags and
/// packet durations (1 to 120 ms, from the TOC byte, RFC 6716 §3.1). Layout rules that do not
/// affect the packets (granule values, where the header packets end) are not.
///
/// # End of input
///
/// The stream ends cleanly (`Ok(None)`) at the end-of-stream page, or when the input ends exactly
/// at a page boundary with no packet in progress (a recording cut short between pages). Input
/// that ends inside a page (a truncated last page) is a [`SourceError::Ogg`] carrying the offset
/// of that page, and so is input that ends with a packet still open. Errors are sticky: after
/// one, every call returns it again.
///
/// Each frame gets [`PASSTHROUGH_AUDIO_LEVEL`] with voice activity set.
#[derive(Debug)]
pub struct OggOpusReader {
    /// The whole file; packets are slices of it.
    data: Bytes,
    /// Serial number of the stream being read.
    serial: u32,
    /// The stream's identification header.
    head: OpusHead,
    /// Offset of the next page to parse.
    next_page_offset: usize,
    /// Sequence number the next page of our stream must carry.
    expected_sequence: u32,
    /// The page of our stream whose packets are being handed out.
    page: Option<Page>,
    /// Next lacing value to read in `page`.
    segment_index: usize,
    /// Offset of the next unread body byte in `page`.
    body_cursor: usize,
    /// The start of a packet that continues on a later page; empty when no packet is open.
    /// Non-empty whenever one is open, because only a lacing value of 255 leaves it open.
    partial: Vec<u8>,
    /// Reading, ended or failed.
    state: ReadState,
}

impl OggOpusReader {
    /// Parses the headers of an Ogg/Opus file held in memory.
    ///
    /// Fails with [`SourceError::Ogg`] if the first pages are malformed and with
    /// [`SourceError::NotOpus`] if no stream starts with a valid `OpusHead` followed by
    /// `OpusTags`. Audio packets are parsed lazily by [`next_frame`](FrameSource::next_frame).
    pub fn new(data: Bytes) -> Result<Self, SourceError> {
        let (page, head) = find_opus_stream(&data)?;
        let mut reader = Self {
            serial: page.serial,
            head,
            next_page_offset: page.end,
            expected_sequence: page.sequence.wrapping_add(1),
            page: None,
            segment_index: 0,
            body_cursor: 0,
            partial: Vec::new(),
            state: ReadState::Reading,
            data,
        };
        if page.has(FLAG_EOS) {
            return Err(not_opus("stream ends after OpusHead, before OpusTags"));
        }
        match reader.next_packet()? {
            None => Err(not_opus("stream ends after OpusHead, before OpusTags")),
            Some((tags, _)) if tags.starts_with(OPUS_TAGS_MAGIC) => Ok(reader),
            Some(_) => Err(not_opus("second packet is not an OpusTags header")),
        }
    }

    /// Reads everything from `reader` into memory and parses it as in [`new`](Self::new).
    ///
    /// Reads until end of input, so give it a file, not an endless stream. Read failures are
    /// [`SourceError::Io`]. The crate does no I/O itself: the caller opens the file.
    pub fn from_reader(mut reader: impl Read) -> Result<Self, SourceError> {
        let mut data = Vec::new();
        reader.read_to_end(&mut data).map_err(|e| SourceError::Io {
            reason: e.to_string(),
        })?;
        Self::new(Bytes::from(data))
    }

    /// Channel count from `OpusHead` (1 or 2 for ordinary files).
    pub fn channels(&self) -> u8 {
        self.head.channels
    }

    /// Samples (at 48 kHz) the encoder asked decoders to drop at the start (`OpusHead`
    /// pre-skip). Passthrough cannot drop them; see the type docs.
    pub fn pre_skip(&self) -> u16 {
        self.head.pre_skip
    }

    /// Sample rate of the audio the file was encoded from, in Hz, as recorded in `OpusHead`.
    /// Informational only: Opus always decodes at 48 kHz here.
    pub fn input_sample_rate_hz(&self) -> u32 {
        self.head.input_sample_rate_hz
    }

    /// Serial number of the logical stream being read.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The next page of our stream, checking its sequence number and flags; `Ok(None)` at the end
    /// of the input.
    fn next_own_page(&mut self) -> Result<Option<Page>, SourceError> {
        loop {
            let Some(page) = Page::parse(&self.data, self.next_page_offset)? else {
                return Ok(None);
            };
            self.next_page_offset = page.end;
            if page.serial != self.serial {
                continue;
            }
            if page.sequence != self.expected_sequence {
                return Err(ogg_error(
                    page.offset,
                    format!(
                        "page sequence {} where {} was expected (lost or reordered page)",
                        page.sequence, self.expected_sequence
                    ),
                ));
            }
            self.expected_sequence = page.sequence.wrapping_add(1);
            if page.has(FLAG_BOS) {
                return Err(ogg_error(page.offset, "second beginning-of-stream page"));
            }
            let open_packet = !self.partial.is_empty();
            if page.has(FLAG_CONTINUED) && !open_packet {
                return Err(ogg_error(
                    page.offset,
                    "page continues a packet, but no packet is open",
                ));
            }
            if !page.has(FLAG_CONTINUED) && open_packet {
                return Err(ogg_error(
                    page.offset,
                    "page does not continue the packet left open by the previous page",
                ));
            }
            return Ok(Some(page));
        }
    }

    /// The next complete packet of our stream with the offset of the page it ends on;
    /// `Ok(None)` at the end of the stream.
    fn next_packet(&mut self) -> Result<Option<(Bytes, usize)>, SourceError> {
        match &self.state {
            ReadState::Reading => {}
            ReadState::Ended => return Ok(None),
            ReadState::Failed(err) => return Err(err.clone()),
        }
        match self.read_packet() {
            Ok(Some(packet)) => Ok(Some(packet)),
            Ok(None) => {
                self.state = ReadState::Ended;
                Ok(None)
            }
            Err(err) => {
                self.state = ReadState::Failed(err.clone());
                Err(err)
            }
        }
    }

    /// [`next_packet`](Self::next_packet) without the state bookkeeping.
    fn read_packet(&mut self) -> Result<Option<(Bytes, usize)>, SourceError> {
        loop {
            let Some(page) = self.page else {
                let Some(page) = self.next_own_page()? else {
                    if !self.partial.is_empty() {
                        return Err(ogg_error(self.data.len(), "input ends inside a packet"));
                    }
                    return Ok(None);
                };
                self.page = Some(page);
                self.segment_index = 0;
                self.body_cursor = page.body_start;
                continue;
            };
            if self.segment_index >= page.segments {
                // Page used up.
                self.page = None;
                if page.has(FLAG_EOS) {
                    if !self.partial.is_empty() {
                        return Err(ogg_error(
                            page.offset,
                            "end-of-stream page leaves a packet unfinished",
                        ));
                    }
                    return Ok(None);
                }
                continue;
            }
            // Gather lacing values up to the end of the packet or of the page.
            let start = self.body_cursor;
            let mut len = 0_usize;
            let mut complete = false;
            while let Some(lacing) = page.lacing(&self.data, self.segment_index) {
                self.segment_index += 1;
                len += usize::from(lacing);
                if lacing != LACING_CONTINUES {
                    complete = true;
                    break;
                }
            }
            let end = start + len;
            self.body_cursor = end;
            // Page::parse checked that the lacing values and the body, whose length is their sum,
            // lie inside `data`; this check only keeps a broken invariant from panicking or
            // looping forever.
            if (!complete && self.segment_index < page.segments)
                || end > page.end
                || end > self.data.len()
            {
                return Err(ogg_error(page.offset, "packet runs past its page"));
            }
            let Some(piece) = self.data.get(start..end) else {
                return Err(ogg_error(page.offset, "packet runs past its page"));
            };
            if !complete {
                self.partial.extend_from_slice(piece);
                continue;
            }
            let packet = if self.partial.is_empty() {
                // Zero-copy: the packet is a slice of the file.
                self.data.slice(start..end)
            } else {
                self.partial.extend_from_slice(piece);
                // Packets spanning pages are rare (only very large ones); hand the buffer over
                // instead of copying it once more.
                Bytes::from(std::mem::take(&mut self.partial))
            };
            return Ok(Some((packet, page.offset)));
        }
    }
}

impl FrameSource for OggOpusReader {
    fn next_frame(&mut self) -> Result<Option<OpusFrame>, SourceError> {
        let Some((data, page_offset)) = self.next_packet()? else {
            return Ok(None);
        };
        let duration_samples = match toc_duration_samples(&data) {
            Ok(duration) => duration,
            Err(reason) => {
                let err = ogg_error(page_offset, reason);
                self.state = ReadState::Failed(err.clone());
                return Err(err);
            }
        };
        Ok(Some(OpusFrame {
            // One copy per packet, shared by every call that plays this frame.
            data: Arc::from(&data[..]),
            duration_samples,
            audio_level: PASSTHROUGH_AUDIO_LEVEL,
            voice_activity: true,
        }))
    }
}

/// Opus packets of an Ogg/Opus stream that arrives in pieces, such as ffmpeg's output on a pipe
/// (`-c:a copy -f ogg pipe:1` for an input that is already Opus): a push parser.
///
/// [`push`](Self::push) takes bytes as they come and parses every page they complete;
/// [`pop`](Self::pop) hands out the audio packets of the first Opus stream, in order, as
/// [`OpusFrame`]s with [`PASSTHROUGH_AUDIO_LEVEL`]; [`finish`](Self::finish) says whether the
/// input ended cleanly. Pages are checked as [`OggOpusReader`] checks them (capture pattern,
/// version, flags, CRC), the `OpusHead` and `OpusTags` headers too; a page is held in memory
/// only until it is complete. Errors are sticky.
#[derive(Debug, Default)]
pub struct OggOpusStream {
    /// Bytes received and not parsed yet: at most the start of one page.
    buf: Vec<u8>,
    /// Bytes of input before `buf[0]`, for error offsets.
    consumed: u64,
    /// The Opus stream's serial, once its `OpusHead` was seen.
    serial: Option<u32>,
    /// Whether `OpusTags` was seen (audio packets follow it).
    tags_seen: bool,
    /// The start of a packet that continues on the next page.
    partial: Vec<u8>,
    /// Audio packets parsed and not popped yet.
    frames: std::collections::VecDeque<OpusFrame>,
    /// The first error; returned again by every later call.
    failed: Option<SourceError>,
    /// The Opus stream's end-of-stream page was parsed: what follows is ignored, as
    /// [`OggOpusReader`] ignores it.
    ended: bool,
}

impl OggOpusStream {
    /// A parser waiting for the first page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream and parses the pages they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SourceError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.ended {
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        let result = loop {
            if self.ended {
                start = self.buf.len();
                break Ok(());
            }
            match self.next_page_len(start) {
                None => break Ok(()),
                Some(len) => {
                    if let Err(err) = self.parse_page(start) {
                        break Err(err);
                    }
                    start += len;
                }
            }
        };
        self.buf.drain(..start);
        self.consumed += start as u64;
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// The next audio packet parsed so far.
    pub fn pop(&mut self) -> Option<OpusFrame> {
        self.frames.pop_front()
    }

    /// Audio packets parsed and not popped yet.
    pub fn pending(&self) -> usize {
        self.frames.len()
    }

    /// The input ended: an error if it ended inside a page or a packet, or before any Opus
    /// stream began.
    pub fn finish(&mut self) -> Result<(), SourceError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let offset = self.consumed;
        let err = if self.ended {
            None
        } else if !self.buf.is_empty() {
            Some(ogg_error_at(offset, "input ends inside a page"))
        } else if !self.partial.is_empty() {
            Some(ogg_error_at(offset, "input ends inside a packet"))
        } else if self.serial.is_none() {
            Some(not_opus("no Opus stream in the input"))
        } else {
            None
        };
        match err {
            Some(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
            None => Ok(()),
        }
    }

    /// Length of the complete page at `buf[start..]`, or `None` if it is not all there yet.
    fn next_page_len(&self, start: usize) -> Option<usize> {
        let rest = self.buf.get(start..)?;
        let segments = usize::from(*rest.get(PAGE_HEADER_LEN - 1)?);
        let lacing = rest.get(PAGE_HEADER_LEN..PAGE_HEADER_LEN + segments)?;
        let body: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let len = PAGE_HEADER_LEN + segments + body;
        (rest.len() >= len).then_some(len)
    }

    /// Parses the complete page at `buf[start..]`.
    fn parse_page(&mut self, start: usize) -> Result<(), SourceError> {
        let at = self.consumed + start as u64;
        let page = Page::parse(&self.buf, start)
            .map_err(|e| reoffset(e, at))?
            .ok_or_else(|| ogg_error_at(at, "empty page"))?;
        let Some(serial) = self.serial else {
            // Before the Opus stream: look for a beginning-of-stream page holding OpusHead.
            if page.has(FLAG_BOS) {
                let first = page_packets(&self.buf, &page).next();
                if let Some(Ok(packet)) = first
                    && packet.starts_with(OPUS_HEAD_MAGIC)
                {
                    OpusHead::parse(packet)?;
                    self.serial = Some(page.serial);
                }
            }
            return Ok(());
        };
        if page.serial != serial {
            return Ok(());
        }
        let open_packet = !self.partial.is_empty();
        if page.has(FLAG_CONTINUED) != open_packet {
            return Err(ogg_error_at(
                at,
                "page continuation flag does not match the open packet",
            ));
        }
        for piece in page_packets(&self.buf, &page) {
            let (bytes, complete) = match piece {
                Ok(packet) => (packet, true),
                Err(open) => (open, false),
            };
            self.partial.extend_from_slice(bytes);
            if !complete {
                break;
            }
            let packet = std::mem::take(&mut self.partial);
            if !self.tags_seen {
                if !packet.starts_with(OPUS_TAGS_MAGIC) {
                    return Err(not_opus("second packet is not an OpusTags header"));
                }
                self.tags_seen = true;
                continue;
            }
            let duration_samples =
                toc_duration_samples(&packet).map_err(|reason| ogg_error_at(at, reason))?;
            self.frames.push_back(OpusFrame {
                data: Arc::from(packet),
                duration_samples,
                audio_level: PASSTHROUGH_AUDIO_LEVEL,
                voice_activity: true,
            });
        }
        if page.has(FLAG_EOS) {
            if !self.partial.is_empty() {
                return Err(ogg_error_at(
                    at,
                    "end-of-stream page leaves a packet unfinished",
                ));
            }
            self.ended = true;
        }
        Ok(())
    }
}

/// The packets of one page: `Ok` for a packet that ends on it, `Err` for a last piece that
/// continues on the next page. The page was checked by [`Page::parse`], so the ranges hold;
/// a range that did not would end the iteration rather than panic.
fn page_packets<'a>(
    data: &'a [u8],
    page: &Page,
) -> impl Iterator<Item = Result<&'a [u8], &'a [u8]>> + 'a {
    let page = *page;
    let mut segment = 0;
    let mut cursor = page.body_start;
    std::iter::from_fn(move || {
        if segment >= page.segments {
            return None;
        }
        let start = cursor;
        let mut complete = false;
        while let Some(lacing) = page.lacing(data, segment) {
            segment += 1;
            cursor += usize::from(lacing);
            if lacing != LACING_CONTINUES {
                complete = true;
                break;
            }
        }
        let piece = data.get(start..cursor.min(page.end))?;
        Some(if complete { Ok(piece) } else { Err(piece) })
    })
}

/// [`SourceError::Ogg`] at an absolute stream offset.
fn ogg_error_at(offset: u64, reason: impl Into<String>) -> SourceError {
    SourceError::Ogg {
        offset,
        reason: reason.into(),
    }
}

/// An error from [`Page::parse`], whose offset is relative to the parser's buffer, with the
/// page's absolute offset `at` in the stream instead.
fn reoffset(err: SourceError, at: u64) -> SourceError {
    match err {
        SourceError::Ogg { reason, .. } => SourceError::Ogg { offset: at, reason },
        other => other,
    }
}

/// Finds the first beginning-of-stream page whose single packet is an `OpusHead`.
///
/// RFC 3533 §4 puts the beginning-of-stream pages of all multiplexed streams first, and RFC 7845 §3
/// says the `OpusHead` packet is alone on its stream's first page.
fn find_opus_stream(data: &[u8]) -> Result<(Page, OpusHead), SourceError> {
    let mut offset = 0;
    loop {
        let Some(page) = Page::parse(data, offset)? else {
            return Err(if offset == 0 {
                ogg_error(0, "empty input")
            } else {
                not_opus("no stream starts with an OpusHead header")
            });
        };
        if !page.has(FLAG_BOS) {
            return Err(if offset == 0 {
                ogg_error(0, "first page is not a beginning-of-stream page")
            } else {
                not_opus("no stream starts with an OpusHead header")
            });
        }
        offset = page.end;
        // The first packet of the page: lacing values up to the first one below 255.
        let mut len = 0_usize;
        let mut complete_at = None;
        for index in 0..page.segments {
            let Some(lacing) = page.lacing(data, index) else {
                break;
            };
            len += usize::from(lacing);
            if lacing != LACING_CONTINUES {
                complete_at = Some(index);
                break;
            }
        }
        let Some(first_packet) = data.get(page.body_start..page.body_start + len) else {
            return Err(ogg_error(page.offset, "packet runs past its page"));
        };
        if !first_packet.starts_with(OPUS_HEAD_MAGIC) {
            continue;
        }
        if complete_at != Some(page.segments.saturating_sub(1)) {
            return Err(not_opus(
                "OpusHead must be the only packet on its page and end on it",
            ));
        }
        return Ok((page, OpusHead::parse(first_packet)?));
    }
}

/// Writes an Ogg/Opus file (RFC 7845) in memory, one packet per page.
///
/// For fixtures, tests and tools, not the send path: it allocates as it goes. The file starts
/// with an `OpusHead` page (beginning of stream, channel mapping family 0, 48 kHz input rate, no
/// output gain) and an `OpusTags` page (vendor "ringcast", no comments); each audio packet then
/// gets its own page (more than one if it is over 65 025 bytes), with the granule position set
/// to the total duration so far as RFC 7845 §4 asks. [`finish`](Self::finish) sets the
/// end-of-stream flag on the last page.
///
/// Packets and arguments are written as given, unchecked, so tests can build broken files too:
/// `channels` other than 1 or 2, or packets that are not valid Opus, give a file the reader
/// rejects.
#[derive(Debug)]
pub struct OggOpusWriter {
    /// Serial number of the one logical stream.
    serial: u32,
    /// Sequence number of the next page.
    sequence: u32,
    /// Total duration of the packets written so far, in 48 kHz ticks.
    granule: u64,
    /// The file so far.
    out: Vec<u8>,
    /// Offset of the last page in `out`, which [`finish`](Self::finish) marks as the end.
    last_page: usize,
}

impl OggOpusWriter {
    /// Starts a file with one logical stream `serial`, writing its two header pages.
    pub fn new(serial: u32, channels: u8, pre_skip: u16) -> Self {
        let mut writer = Self {
            serial,
            sequence: 0,
            granule: 0,
            out: Vec::new(),
            last_page: 0,
        };
        let mut head = Vec::with_capacity(OPUS_HEAD_MIN_LEN);
        head.extend_from_slice(OPUS_HEAD_MAGIC);
        head.push(1); // version
        head.push(channels);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&super::OPUS_CLOCK_RATE_HZ.to_le_bytes());
        head.extend_from_slice(&0_i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0
        writer.write_packet(&head, 0, FLAG_BOS);

        let vendor = b"ringcast";
        let mut tags = Vec::new();
        tags.extend_from_slice(OPUS_TAGS_MAGIC);
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0_u32.to_le_bytes()); // no user comments
        writer.write_packet(&tags, 0, 0);
        writer
    }

    /// Appends one Opus packet lasting `duration_samples` 48 kHz ticks.
    pub fn push_packet(&mut self, packet: &[u8], duration_samples: u32) {
        self.granule = self.granule.wrapping_add(u64::from(duration_samples));
        self.write_packet(packet, self.granule, 0);
    }

    /// Marks the last page as the end of the stream and returns the file.
    pub fn finish(mut self) -> Vec<u8> {
        if let Some(page) = self.out.get_mut(self.last_page..) {
            if let Some(flags) = page.get_mut(HEADER_TYPE_OFFSET) {
                *flags |= FLAG_EOS;
            }
            if let Some(crc) = page.get_mut(CRC_OFFSET..CRC_OFFSET + 4) {
                crc.fill(0);
            }
            let crc = page_crc(page);
            if let Some(field) = page.get_mut(CRC_OFFSET..CRC_OFFSET + 4) {
                field.copy_from_slice(&crc.to_le_bytes());
            }
        }
        self.out
    }

    /// Writes `packet` on as many pages as its lacing needs, the first with `first_flags`.
    fn write_packet(&mut self, packet: &[u8], granule: u64, first_flags: u8) {
        // Lacing: len / 255 values of 255, then one of len % 255 (0 when len is a multiple of
        // 255, so the reader sees the packet end).
        let full_segments = packet.len() / usize::from(LACING_CONTINUES);
        // < 255 by construction, so the cast is lossless.
        let last_lacing = (packet.len() % usize::from(LACING_CONTINUES)) as u8;
        let total_segments = full_segments + 1;
        let mut written_segments = 0;
        let mut rest = packet;
        let mut lacing = [0_u8; MAX_SEGMENTS_PER_PAGE];
        while written_segments < total_segments {
            let count = MAX_SEGMENTS_PER_PAGE.min(total_segments - written_segments);
            let mut body_len = 0;
            for (i, value) in lacing.iter_mut().take(count).enumerate() {
                *value = if written_segments + i < full_segments {
                    LACING_CONTINUES
                } else {
                    last_lacing
                };
                body_len += usize::from(*value);
            }
            let (body, remaining) = rest.split_at_checked(body_len).unwrap_or((rest, &[]));
            rest = remaining;
            let mut flags = 0;
            if written_segments == 0 {
                flags |= first_flags;
            } else {
                flags |= FLAG_CONTINUED;
            }
            written_segments += count;
            let ends_packet = written_segments == total_segments;
            let page_granule = if ends_packet { granule } else { GRANULE_NONE };
            self.last_page = self.out.len();
            write_page(
                &mut self.out,
                flags,
                page_granule,
                self.serial,
                self.sequence,
                lacing.get(..count).unwrap_or(&[]),
                body,
            );
            self.sequence = self.sequence.wrapping_add(1);
        }
    }
}

/// Appends one page to `out`. `lacing` must describe `body` and hold at most 255 values.
fn write_page(
    out: &mut Vec<u8>,
    header_type: u8,
    granule: u64,
    serial: u32,
    sequence: u32,
    lacing: &[u8],
    body: &[u8],
) {
    let start = out.len();
    out.extend_from_slice(&CAPTURE_PATTERN);
    out.push(0); // stream structure version
    out.push(header_type);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&serial.to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled in below
    // Callers pass at most 255 lacing values.
    out.push(u8::try_from(lacing.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(lacing);
    out.extend_from_slice(body);
    if let Some(page) = out.get_mut(start..) {
        let crc = page_crc(page);
        if let Some(field) = page.get_mut(CRC_OFFSET..CRC_OFFSET + 4) {
            field.copy_from_slice(&crc.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::media::{SAMPLES_PER_FRAME, ToneSource};

    /// TOC of a 20 ms CELT fullband frame, code 0: what libopus emits for music at 48 kHz.
    const TOC_CELT_FB_20MS: u8 = 31 << 3;

    /// Splits a file into its pages (the input must be valid).
    fn pages(file: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut offset = 0;
        while let Some(page) = Page::parse(file, offset).unwrap() {
            out.push(file[offset..page.end].to_vec());
            offset = page.end;
        }
        out
    }

    /// Offsets of the pages of a valid file.
    fn page_offsets(file: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut offset = 0;
        while let Some(page) = Page::parse(file, offset).unwrap() {
            out.push(offset);
            offset = page.end;
        }
        out
    }

    /// A page holding `packets` whole, with a correct CRC.
    fn page_with(header_type: u8, serial: u32, sequence: u32, packets: &[&[u8]]) -> Vec<u8> {
        let mut lacing = Vec::new();
        let mut body = Vec::new();
        for packet in packets {
            lacing.extend(std::iter::repeat_n(255, packet.len() / 255));
            lacing.push((packet.len() % 255) as u8);
            body.extend_from_slice(packet);
        }
        let mut out = Vec::new();
        write_page(&mut out, header_type, 0, serial, sequence, &lacing, &body);
        out
    }

    fn tone_frames(n: usize) -> Vec<OpusFrame> {
        let mut tone = ToneSource::new(440.0, None).unwrap();
        (0..n)
            .map(|_| tone.next_frame().unwrap().unwrap())
            .collect()
    }

    fn write(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut writer = OggOpusWriter::new(7, 2, 312);
        for packet in packets {
            writer.push_packet(packet, SAMPLES_PER_FRAME);
        }
        writer.finish()
    }

    /// Every frame until the end, or the first error.
    fn read_all(reader: &mut OggOpusReader) -> Result<Vec<OpusFrame>, SourceError> {
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn celt_packet(len: usize, fill: u8) -> Vec<u8> {
        let mut packet = vec![fill; len];
        packet[0] = TOC_CELT_FB_20MS;
        packet
    }

    /// Feeds `file` to an [`OggOpusStream`] in `chunk`-byte pieces.
    fn stream_all(file: &[u8], chunk: usize) -> Result<Vec<OpusFrame>, SourceError> {
        let mut stream = OggOpusStream::new();
        let mut frames = Vec::new();
        for piece in file.chunks(chunk) {
            stream.push(piece)?;
            while let Some(frame) = stream.pop() {
                frames.push(frame);
            }
        }
        stream.finish()?;
        Ok(frames)
    }

    #[test]
    fn stream_parser_matches_the_file_reader_whatever_the_chunking() {
        // Packets of 300 and 600 bytes span lacing runs; 70 of them span pages.
        let packets: Vec<Vec<u8>> = (0..70)
            .map(|i| celt_packet(if i % 3 == 0 { 600 } else { 300 }, i as u8))
            .collect();
        let file = write(&packets);
        let expected =
            read_all(&mut OggOpusReader::new(Bytes::from(file.clone())).unwrap()).unwrap();
        assert_eq!(expected.len(), 70);
        for chunk in [1, 7, 27, 4096, file.len()] {
            let got = stream_all(&file, chunk).unwrap();
            assert_eq!(got, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn stream_parser_reports_truncation_garbage_and_non_opus() {
        let file = write(&[celt_packet(100, 1), celt_packet(100, 2)]);
        let cut = &file[..file.len() - 5];
        assert!(matches!(
            stream_all(cut, 64),
            Err(SourceError::Ogg { reason, .. }) if reason.contains("inside a page")
        ));
        let mut garbage = file.clone();
        let last = garbage.len() - 1;
        garbage[last] ^= 0xff;
        assert!(matches!(
            stream_all(&garbage, 64),
            Err(SourceError::Ogg { reason, .. }) if reason.contains("crc")
        ));
        assert!(matches!(
            stream_all(b"", 64),
            Err(SourceError::NotOpus { .. })
        ));
        // Errors are sticky.
        let mut stream = OggOpusStream::new();
        assert!(stream.push(&[0_u8; 64]).is_err());
        assert!(stream.push(&file).is_err());
    }

    proptest! {
        #[test]
        fn stream_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048), chunk in 1_usize..300) {
            let _ = stream_all(&bytes, chunk);
        }
    }

    fn assert_ogg_error(result: Result<impl std::fmt::Debug, SourceError>, at: usize) {
        match result {
            Err(SourceError::Ogg { offset, .. }) => assert_eq!(offset, at as u64),
            other => panic!("expected an ogg error at {at}, got {other:?}"),
        }
    }

    /// The header pages of a file made by opusenc (opus-tools 0.2, libopus 1.3.1) from 60 ms of a
    /// 440 Hz sine: `opusenc --bitrate 6 --framesize 10`. The OpusTags packet spans three lacing
    /// values and is followed by 631 zero bytes of padding, left out here.
    const OPUSENC_HEAD: &[u8] = b"\
        OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00,X\xf6/\x00\x00\x00\x00O\xc9\x89:\
        \x01\x13OpusHead\x01\x018\x01\x80\xbb\x00\x00\x00\x00\x00OggS\x00\x00\x00\x00\
        \x00\x00\x00\x00\x00\x00,X\xf6/\x01\x00\x00\x00\x95\xe0?\x8f\x03\xff\xff\xfeOpusTags\
        \x1f\x00\x00\x00libopus 1.3.1, libopusenc 0.2.1\x02\x00\x00\x00#\x00\x00\x00ENCODER=opusen\
        c from opus-tools 0.2*\x00\x00\x00ENCODER_OPTIONS=--bitrate 6 --framesize 10\
        \x00";
    /// The audio page of the same file: seven 10 ms packets on one page, end-of-stream flag set,
    /// granule position 3192 (3360 samples minus 168 of end trimming).
    const OPUSENC_TAIL: &[u8] = b"\
        OggS\x00\x04x\x0c\x00\x00\x00\x00\x00\x00,X\xf6/\x02\x00\x00\x00\x15\x12\x90\
        \xe4\x07\x08\x0b\x0c\x0b\x0c\x0b\x0b\x00\x85q\xeaG\x03\xd0\xce\x00\xbc<\xf0I2\
        \xab\x93l\xae\xdc\x00\xb6\x9b\xaf>\xb8\xc6\x1b&\xc2\x976\x00\xb4\xf0\xf6B\x83\
        \xfbK\xed\xd5\xc0\x00\xb5\x0a\xc8t=\xe5\xf8\xabx6\x18\x00\xb53\x0aN\xf2b\xff\
        \xb5\xd2\xa8\x00\x84\xbf\xc9\xdc:\x9c\xea\xd8\xab\xc0";

    #[test]
    fn reads_a_file_made_by_opusenc() {
        let mut file = OPUSENC_HEAD.to_vec();
        file.extend([0; 631]);
        file.extend_from_slice(OPUSENC_TAIL);
        assert_eq!(file.len(), 951);
        let file = Bytes::from(file);
        let mut reader = OggOpusReader::new(file).unwrap();
        assert_eq!(reader.channels(), 1);
        assert_eq!(reader.pre_skip(), 312);
        assert_eq!(reader.input_sample_rate_hz(), 48_000);
        assert_eq!(reader.serial(), 0x2ff6_582c);
        let frames = read_all(&mut reader).unwrap();
        let lens: Vec<usize> = frames.iter().map(|f| f.data.len()).collect();
        assert_eq!(lens, [8, 11, 12, 11, 12, 11, 11]);
        for frame in &frames {
            // TOC 0x00: SILK narrowband 10 ms, one frame.
            assert_eq!(frame.data[0], 0);
            assert_eq!(frame.duration_samples, 480);
        }
    }

    #[test]
    fn crc_matches_the_reference_check_value() {
        // CRC-32/CKSUM's check value 0x765e7680 without its final inversion: same polynomial,
        // initial value 0, no reflection, as Ogg uses.
        assert_eq!(crc_update(0, b"123456789"), 0x89a1_897f);
        assert_eq!(crc_update(0, b"123456789") ^ 0xffff_ffff, 0x765e_7680);
    }

    #[test]
    fn tone_frames_round_trip() {
        let frames = tone_frames(50);
        let mut writer = OggOpusWriter::new(0x1234_5678, 1, 312);
        for frame in &frames {
            writer.push_packet(&frame.data, frame.duration_samples);
        }
        let file = writer.finish();

        let mut reader = OggOpusReader::new(Bytes::from(file)).unwrap();
        assert_eq!(reader.channels(), 1);
        assert_eq!(reader.pre_skip(), 312);
        assert_eq!(reader.input_sample_rate_hz(), 48_000);
        assert_eq!(reader.serial(), 0x1234_5678);
        let read = read_all(&mut reader).unwrap();
        assert_eq!(read.len(), 50);
        for (original, read) in frames.iter().zip(&read) {
            assert_eq!(read.data, original.data);
            assert_eq!(read.duration_samples, 960);
            assert_eq!(read.audio_level, PASSTHROUGH_AUDIO_LEVEL);
            assert!(read.voice_activity);
        }
        assert_eq!(reader.next_frame(), Ok(None));
        assert_eq!(reader.next_frame(), Ok(None));
    }

    #[test]
    fn writer_layout_follows_rfc_7845() {
        let file = write(&[celt_packet(100, 1), celt_packet(100, 2)]);
        let offsets = page_offsets(&file);
        assert_eq!(offsets.len(), 4);
        let parsed: Vec<Page> = offsets
            .iter()
            .map(|&o| Page::parse(&file, o).unwrap().unwrap())
            .collect();
        let flags: Vec<u8> = parsed.iter().map(|p| p.header_type).collect();
        assert_eq!(flags, [FLAG_BOS, 0, 0, FLAG_EOS]);
        let sequences: Vec<u32> = parsed.iter().map(|p| p.sequence).collect();
        assert_eq!(sequences, [0, 1, 2, 3]);
        let granules: Vec<u64> = offsets
            .iter()
            .map(|&o| u64::from_le_bytes(file[o + 6..o + 14].try_into().unwrap()))
            .collect();
        assert_eq!(granules, [0, 0, 960, 1920]);
        assert_eq!(&file[parsed[0].body_start..parsed[0].end][..8], b"OpusHead");
        assert_eq!(&file[parsed[1].body_start..parsed[1].end][..8], b"OpusTags");
    }

    #[test]
    fn single_page_packets_read_back_exactly() {
        let packets = [celt_packet(300, 5), celt_packet(40, 6)];
        let file = Bytes::from(write(&packets));
        let mut reader = OggOpusReader::new(file).unwrap();
        let frames = read_all(&mut reader).unwrap();
        assert_eq!(frames.len(), 2);
        for (frame, packet) in frames.iter().zip(&packets) {
            assert_eq!(&frame.data[..], &packet[..]);
        }
    }

    #[test]
    fn packets_spanning_pages_round_trip() {
        // 65 025 = 255 × 255 fills a page exactly and needs a terminating 0 lacing value on the
        // next page; 70 000 spans two pages, 200 000 four.
        let packets = vec![
            celt_packet(65_025, 1),
            celt_packet(70_000, 2),
            celt_packet(10, 3),
            celt_packet(200_000, 4),
            celt_packet(65_024, 5),
            celt_packet(255, 6),
        ];
        let file = write(&packets);
        let mut reader = OggOpusReader::new(Bytes::from(file)).unwrap();
        let read = read_all(&mut reader).unwrap();
        assert_eq!(read.len(), packets.len());
        for (packet, frame) in packets.iter().zip(&read) {
            assert_eq!(&frame.data[..], &packet[..]);
            assert_eq!(frame.duration_samples, 960);
        }
    }

    #[test]
    fn corrupt_crc_is_an_ogg_error() {
        let file = write(&[celt_packet(50, 1), celt_packet(50, 2)]);
        let offsets = page_offsets(&file);

        // A flipped bit in an audio page: the headers parse, the page does not.
        let mut bad = file.clone();
        *bad.last_mut().unwrap() ^= 0x10;
        let mut reader = OggOpusReader::new(Bytes::from(bad)).unwrap();
        assert!(reader.next_frame().unwrap().is_some());
        assert_ogg_error(reader.next_frame(), offsets[3]);
        // Sticky: the same error again, no panic, no skipping ahead.
        assert_ogg_error(reader.next_frame(), offsets[3]);

        // A wrong CRC field in the first page.
        let mut bad = file;
        bad[CRC_OFFSET] ^= 1;
        assert_ogg_error(OggOpusReader::new(Bytes::from(bad)), 0);
    }

    #[test]
    fn truncated_last_page_is_an_error_with_its_offset() {
        let file = write(&[celt_packet(50, 1), celt_packet(50, 2), celt_packet(50, 3)]);
        let offsets = page_offsets(&file);
        let last = offsets[4];
        // Inside the fixed header, at the segment table, inside the body.
        for cut in [
            last + 3,
            last + PAGE_HEADER_LEN,
            last + PAGE_HEADER_LEN + 1,
            file.len() - 1,
        ] {
            let mut reader = OggOpusReader::new(Bytes::copy_from_slice(&file[..cut])).unwrap();
            assert_eq!(reader.next_frame().unwrap().unwrap().data[1], 1);
            assert_eq!(reader.next_frame().unwrap().unwrap().data[1], 2);
            assert_ogg_error(reader.next_frame(), last);
        }
    }

    #[test]
    fn truncation_at_a_page_boundary_is_a_clean_end() {
        let file = write(&[celt_packet(50, 1), celt_packet(50, 2), celt_packet(50, 3)]);
        let offsets = page_offsets(&file);
        let mut reader = OggOpusReader::new(Bytes::copy_from_slice(&file[..offsets[4]])).unwrap();
        assert_eq!(read_all(&mut reader).unwrap().len(), 2);
    }

    #[test]
    fn input_ending_inside_a_packet_is_an_error() {
        // Cut after the first page of a two-page packet: the packet never closes.
        let file = write(&[celt_packet(70_000, 1)]);
        let offsets = page_offsets(&file);
        let cut = &file[..offsets[3]];
        let mut reader = OggOpusReader::new(Bytes::copy_from_slice(cut)).unwrap();
        assert_ogg_error(reader.next_frame(), cut.len());
    }

    #[test]
    fn garbage_and_empty_input_are_ogg_errors() {
        assert_ogg_error(OggOpusReader::new(Bytes::new()), 0);
        assert_ogg_error(
            OggOpusReader::new(Bytes::from_static(b"RIFF\x24\x00\x00\x00WAVEfmt ")),
            0,
        );
        assert_ogg_error(OggOpusReader::new(Bytes::from(vec![0xab; 4096])), 0);
        // A valid capture pattern with an unknown version.
        let mut page = page_with(FLAG_BOS, 1, 0, &[b"OpusHead"]);
        page[4] = 1;
        assert_ogg_error(OggOpusReader::new(Bytes::from(page)), 0);
    }

    #[test]
    fn non_opus_streams_are_not_opus() {
        let not_opus = |file: Vec<u8>| {
            let result = OggOpusReader::new(Bytes::from(file));
            assert!(
                matches!(result, Err(SourceError::NotOpus { .. })),
                "{result:?}"
            );
        };
        // A Vorbis identification header where OpusHead should be.
        let mut file = page_with(FLAG_BOS, 1, 0, &[b"\x01vorbis\x00\x00\x00\x00\x02"]);
        file.extend(page_with(0, 1, 1, &[b"\x03vorbis"]));
        not_opus(file);

        let head = |version: u8, channels: u8, family: u8| {
            let mut head = b"OpusHead".to_vec();
            head.extend([
                version, channels, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, family,
            ]);
            head
        };
        let with_tags = |head: &[u8]| {
            let mut file = page_with(FLAG_BOS, 1, 0, &[head]);
            file.extend(page_with(
                0,
                1,
                1,
                &[b"OpusTags\x00\x00\x00\x00\x00\x00\x00\x00"],
            ));
            file
        };
        // Sanity check: the good header parses.
        assert!(OggOpusReader::new(Bytes::from(with_tags(&head(1, 2, 0)))).is_ok());
        not_opus(with_tags(&head(0x10, 2, 0))); // incompatible version
        not_opus(with_tags(&head(1, 0, 0))); // no channels
        not_opus(with_tags(&head(1, 3, 0))); // family 0 is mono or stereo
        not_opus(with_tags(&head(1, 6, 1))); // family 1 without its mapping table
        not_opus(with_tags(&head(1, 2, 0)[..18])); // short header
        let mut surround = head(1, 6, 1);
        surround.extend([4, 2, 0, 4, 1, 2, 3, 5]); // 4 streams: multistream
        not_opus(with_tags(&surround));
        let mut mono_family_1 = head(1, 1, 1);
        mono_family_1.extend([1, 0, 0]); // one stream: plain Opus packets
        assert!(OggOpusReader::new(Bytes::from(with_tags(&mono_family_1))).is_ok());

        // OpusTags missing: stream ends, or something else comes second.
        not_opus(page_with(FLAG_BOS, 1, 0, &[&head(1, 2, 0)]));
        not_opus(page_with(FLAG_BOS | FLAG_EOS, 1, 0, &[&head(1, 2, 0)]));
        let mut file = page_with(FLAG_BOS, 1, 0, &[&head(1, 2, 0)]);
        file.extend(page_with(0, 1, 1, &[&[TOC_CELT_FB_20MS, 1, 2]]));
        not_opus(file);
        // OpusHead sharing its page with another packet.
        let mut file = page_with(FLAG_BOS, 1, 0, &[&head(1, 2, 0), b"OpusTags"]);
        file.extend(page_with(0, 1, 1, &[&[TOC_CELT_FB_20MS, 1, 2]]));
        not_opus(file);
    }

    #[test]
    fn first_page_must_begin_a_stream() {
        let file = page_with(0, 1, 0, &[b"OpusHead"]);
        assert_ogg_error(OggOpusReader::new(Bytes::from(file)), 0);
    }

    #[test]
    fn other_streams_are_skipped() {
        let ours = pages(&write(&[
            celt_packet(20, 1),
            celt_packet(30, 2),
            celt_packet(40, 3),
        ]));
        let mut other_writer = OggOpusWriter::new(99, 1, 0);
        for i in 0..3 {
            other_writer.push_packet(&celt_packet(25, 0x40 + i), 960);
        }
        let theirs = pages(&other_writer.finish());
        // A non-Opus stream's BOS page first, then the two Opus streams interleaved: we read the
        // first Opus stream only.
        let mut file = page_with(FLAG_BOS, 5, 0, &[b"\x80theora"]);
        for (a, b) in ours.iter().zip(&theirs) {
            file.extend_from_slice(a);
            file.extend_from_slice(b);
        }
        file.extend(page_with(0, 5, 1, &[b"video"]));
        let mut reader = OggOpusReader::new(Bytes::from(file)).unwrap();
        assert_eq!(reader.serial(), 7);
        let read = read_all(&mut reader).unwrap();
        let lens: Vec<usize> = read.iter().map(|f| f.data.len()).collect();
        assert_eq!(lens, [20, 30, 40]);
    }

    #[test]
    fn reading_stops_at_end_of_stream() {
        // A chained file: a second link after our end-of-stream page is not read.
        let mut file = write(&[celt_packet(20, 1)]);
        file.extend(b"garbage that would be an error if it were parsed");
        let mut reader = OggOpusReader::new(Bytes::from(file)).unwrap();
        assert_eq!(read_all(&mut reader).unwrap().len(), 1);
    }

    #[test]
    fn empty_stream_reads_as_no_frames() {
        let mut reader = OggOpusReader::new(Bytes::from(write(&[]))).unwrap();
        assert_eq!(reader.next_frame(), Ok(None));
    }

    #[test]
    fn missing_end_of_stream_flag_is_a_clean_end() {
        let file = write(&[celt_packet(20, 1), celt_packet(20, 2)]);
        let mut pages = pages(&file);
        let last = pages.last_mut().unwrap();
        last[HEADER_TYPE_OFFSET] = 0;
        last[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
        let crc = page_crc(last);
        last[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        let mut reader = OggOpusReader::new(Bytes::from(pages.concat())).unwrap();
        assert_eq!(read_all(&mut reader).unwrap().len(), 2);
    }

    #[test]
    fn page_sequence_gap_is_an_error() {
        let file = write(&[celt_packet(20, 1), celt_packet(20, 2), celt_packet(20, 3)]);
        let mut pages = pages(&file);
        let dropped_at: usize = pages[..3].iter().map(Vec::len).sum();
        pages.remove(3);
        let mut reader = OggOpusReader::new(Bytes::from(pages.concat())).unwrap();
        assert!(reader.next_frame().unwrap().is_some());
        assert_ogg_error(reader.next_frame(), dropped_at);
    }

    #[test]
    fn continuation_flags_must_match_open_packets() {
        let head = pages(&write(&[]));
        let header_pages = [
            head[0].clone(),
            page_with(0, 7, 1, &[b"OpusTags\0\0\0\0\0\0\0\0"]),
        ];
        let headers_len: usize = header_pages.iter().map(Vec::len).sum();

        // "Continued" with nothing open.
        let mut file = header_pages.concat();
        file.extend(page_with(FLAG_CONTINUED, 7, 2, &[&[TOC_CELT_FB_20MS, 0]]));
        let mut reader = OggOpusReader::new(Bytes::from(file)).unwrap();
        assert_ogg_error(reader.next_frame(), headers_len);

        // A packet left open (last lacing value 255), then a page that does not continue it.
        let mut file = header_pages.concat();
        let open = celt_packet(255, 1);
        write_page(&mut file, 0, GRANULE_NONE, 7, 2, &[255], &open);
        let second = file.len();
        file.extend(page_with(0, 7, 3, &[&[TOC_CELT_FB_20MS, 0]]));
        let mut reader = OggOpusReader::new(Bytes::from(file)).unwrap();
        assert_ogg_error(reader.next_frame(), second);

        // An end-of-stream page that leaves a packet open.
        let mut file = header_pages.concat();
        let eos = file.len();
        write_page(&mut file, FLAG_EOS, GRANULE_NONE, 7, 2, &[255], &open);
        let mut reader = OggOpusReader::new(Bytes::from(file)).unwrap();
        assert_ogg_error(reader.next_frame(), eos);
    }

    #[test]
    fn invalid_opus_packets_are_errors() {
        let too_long = vec![TOC_CELT_FB_20MS | 3, 7]; // 7 × 20 ms = 140 ms
        for packet in [Vec::new(), too_long, vec![TOC_CELT_FB_20MS | 3]] {
            let file = write(&[celt_packet(20, 1), packet]);
            let offsets = page_offsets(&file);
            let mut reader = OggOpusReader::new(Bytes::from(file)).unwrap();
            assert!(reader.next_frame().unwrap().is_some());
            assert_ogg_error(reader.next_frame(), offsets[3]);
            assert_ogg_error(reader.next_frame(), offsets[3]);
        }
    }

    #[test]
    fn durations_come_from_the_toc() {
        // 10 ms SILK, 60 ms SILK, 2 × 20 ms CELT, 120 ms CELT (code 3, 6 frames).
        let packets = vec![
            vec![1 << 3, 0],
            vec![3 << 3, 0],
            vec![(31 << 3) | 1, 0, 0],
            vec![(31 << 3) | 3, 6],
        ];
        let file = write(&packets);
        let mut reader = OggOpusReader::new(Bytes::from(file)).unwrap();
        let durations: Vec<u32> = read_all(&mut reader)
            .unwrap()
            .iter()
            .map(|f| f.duration_samples)
            .collect();
        assert_eq!(durations, [960, 2880, 1920, 5760]);
    }

    #[test]
    fn from_reader_reads_and_reports_io_errors() {
        let file = write(&[celt_packet(20, 1)]);
        let mut reader = OggOpusReader::from_reader(&file[..]).unwrap();
        assert_eq!(read_all(&mut reader).unwrap().len(), 1);

        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        assert_eq!(
            OggOpusReader::from_reader(Broken).unwrap_err(),
            SourceError::Io {
                reason: "disk on fire".into()
            }
        );
    }

    #[test]
    fn reader_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<OggOpusReader>();
    }

    /// Drives a reader over `data` to its end, with an iteration cap; must not panic.
    fn drain(data: Vec<u8>) {
        if let Ok(mut reader) = OggOpusReader::new(Bytes::from(data)) {
            for _ in 0..10_000 {
                match reader.next_frame() {
                    Ok(Some(frame)) => assert!(!frame.data.is_empty()),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            drain(data);
        }

        #[test]
        fn arbitrary_bytes_after_valid_headers_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let mut data = pages(&write(&[])).concat();
            // Drop the end-of-stream flag by rebuilding the tags page without it.
            data.truncate(page_offsets(&data)[1]);
            data.extend(page_with(0, 7, 1, &[b"OpusTags\0\0\0\0\0\0\0\0"]));
            data.extend(tail);
            drain(data);
        }

        /// Pages with valid CRCs but random flags, serials, sequence numbers and lacing: the
        /// reassembly logic sees every combination, not just CRC failures.
        #[test]
        fn random_valid_crc_pages_never_panic(
            pages_spec in proptest::collection::vec(
                (0_u8..8, prop_oneof![Just(7_u32), Just(8)], any::<bool>(),
                 proptest::collection::vec(prop_oneof![Just(255_u8), any::<u8>()], 0..20)),
                0..12,
            ),
            body_byte in any::<u8>(),
        ) {
            let mut data = pages(&write(&[])).concat();
            data.truncate(page_offsets(&data)[1]);
            data.extend(page_with(0, 7, 1, &[b"OpusTags\0\0\0\0\0\0\0\0"]));
            for (i, (flags, serial, right_sequence, lacing)) in pages_spec.into_iter().enumerate() {
                let sequence = if right_sequence { 2 + i as u32 } else { 1000 };
                let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
                let mut body = vec![body_byte; body_len];
                if let Some(first) = body.first_mut() {
                    *first = TOC_CELT_FB_20MS;
                }
                write_page(&mut data, flags, 0, serial, sequence, &lacing, &body);
            }
            drain(data);
        }

        /// parse(emit(packets)) == packets, for packets of any size and TOC config.
        #[test]
        fn write_then_read_round_trips(
            packets in proptest::collection::vec(
                (0_u8..32, prop_oneof![
                    4 => proptest::collection::vec(any::<u8>(), 0..600),
                    1 => proptest::collection::vec(any::<u8>(), 65_000..66_000),
                ]),
                0..8,
            ),
        ) {
            let packets: Vec<Vec<u8>> = packets
                .into_iter()
                .map(|(config, tail)| {
                    let mut packet = vec![config << 3];
                    packet.extend(tail);
                    packet
                })
                .collect();
            let mut writer = OggOpusWriter::new(3, 1, 0);
            for packet in &packets {
                writer.push_packet(packet, crate::media::packet_duration_samples(packet).unwrap());
            }
            let mut reader = OggOpusReader::new(Bytes::from(writer.finish())).unwrap();
            let read = read_all(&mut reader).unwrap();
            prop_assert_eq!(read.len(), packets.len());
            for (packet, frame) in packets.iter().zip(&read) {
                prop_assert_eq!(&frame.data[..], &packet[..]);
                prop_assert_eq!(
                    Some(frame.duration_samples),
                    crate::media::packet_duration_samples(packet)
                );
            }
        }
    }
}
