//! Hostile RTCP for [`crate::Misbehaviour::HostileRtcp`]: what a hostile SFU can send a
//! participant once it holds the SRTCP keys, built here and protected with the participant's
//! own outgoing SRTCP context (ringcast's str0m patch, `DirectApi::protect_rtcp_raw`). Tests
//! of the engine's bounds drive it: NACK storms over every sequence number, PLI and FIR
//! floods, REMB of zero, thousands of report blocks, lengths that disagree, compounds "from"
//! the participant's own SSRC, and replays.

/// Sender SSRC of the crafted compounds (not a participant's).
const SENDER: u32 = 0x5F0_0002;

/// An RTCP packet: version 2, `count` (RC or FMT), type `pt`, `body` after the length word.
fn rtcp(count: u8, pt: u8, body: &[u8], length: Option<u16>) -> Vec<u8> {
    let words = length.unwrap_or((body.len() / 4) as u16);
    let mut p = vec![0x80 | (count & 0x1f), pt];
    p.extend_from_slice(&words.to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// An empty receiver report from `sender`, the head of a compound.
fn rr_empty(sender: u32) -> Vec<u8> {
    rtcp(0, 201, &sender.to_be_bytes(), None)
}

/// Sender and media SSRC of a feedback message.
fn fb(media: u32) -> Vec<u8> {
    let mut b = SENDER.to_be_bytes().to_vec();
    b.extend_from_slice(&media.to_be_bytes());
    b
}

/// Ten 31-item NACK packets for `media` from sequence number `first` on, every item with all
/// 16 following bits set (5,270 sequence numbers).
fn nack_storm(media: u32, first: u16) -> Vec<u8> {
    let mut c = rr_empty(SENDER);
    for p in 0..10u16 {
        let mut b = fb(media);
        for i in 0..31u16 {
            let pid = first.wrapping_add((p * 31 + i) * 17);
            b.extend_from_slice(&pid.to_be_bytes());
            b.extend_from_slice(&0xffffu16.to_be_bytes());
        }
        c.extend_from_slice(&rtcp(1, 205, &b, None));
    }
    c
}

/// The `i`-th hostile compound for a participant whose media SSRC is `media`. Cycles through
/// the kinds; the caller protects it (a replay is the caller's: send one datagram twice).
pub fn compound(i: u32, media: u32) -> Vec<u8> {
    match i % 6 {
        // NACK storms walk the whole sequence space.
        0 | 1 => nack_storm(media, (i.wrapping_mul(5_270) & 0xffff) as u16),
        2 => {
            // PLI and FIR.
            let mut c = rr_empty(SENDER);
            c.extend_from_slice(&rtcp(1, 206, &fb(media), None));
            let mut fir = fb(0);
            fir.extend_from_slice(&media.to_be_bytes());
            fir.extend_from_slice(&[i as u8, 0, 0, 0]);
            c.extend_from_slice(&rtcp(4, 206, &fir, None));
            c
        }
        3 => {
            // REMB of zero for the participant's SSRC.
            let mut b = fb(0);
            b.extend_from_slice(b"REMB");
            b.extend_from_slice(&[1, 0, 0, 0]);
            b.extend_from_slice(&media.to_be_bytes());
            let mut c = rr_empty(SENDER);
            c.extend_from_slice(&rtcp(15, 206, &b, None));
            c
        }
        4 => {
            // Thousands of report blocks (~60 KB, below the UDP limit) and, first, lengths that
            // disagree.
            let mut c = rr_empty(SENDER);
            let mut block = media.to_be_bytes().to_vec();
            block.extend_from_slice(&[0xff; 20]);
            c.extend_from_slice(&rtcp(
                31,
                201,
                &[SENDER.to_be_bytes().to_vec(), block.clone()].concat(),
                None,
            ));
            c.extend_from_slice(&rtcp(1, 201, &block, Some(0xffff)));
            if i % 12 == 4 {
                let mut rr = SENDER.to_be_bytes().to_vec();
                for _ in 0..31 {
                    rr.extend_from_slice(&block);
                }
                for _ in 0..80 {
                    c.extend_from_slice(&rtcp(31, 201, &rr, None));
                }
            }
            c
        }
        _ => {
            // A compound "from" the participant's own SSRC.
            let mut c = rr_empty(media);
            c.extend_from_slice(&rtcp(1, 206, &fb(media), None));
            c
        }
    }
}
