//! Hostile RTCP for [`crate::Misbehaviour::HostileRtcp`]: what a hostile SFU can send a
//! participant once it holds the SRTCP keys, built here and protected with the participant's
//! own outgoing SRTCP context (ringcast's str0m patch, `DirectApi::protect_rtcp_raw`). Tests
//! of the engine's bounds drive it: NACK storms over every sequence number, PLI and FIR
//! floods, REMB of zero, thousands of report blocks, lengths that disagree, compounds "from"
//! the participant's own SSRC, and replays.

use ringcast_core::rtcp_craft as craft;

/// Sender SSRC of the crafted compounds (not a participant's).
const SENDER: u32 = 0x5F0_0002;

/// Ten 31-item NACK packets (str0m reads 31 items of one) for `media` from sequence number
/// `first` on, every item with all 16 following bits set: 5,270 sequence numbers.
fn nack_storm(media: u32, first: u16) -> Vec<u8> {
    let packets: Vec<_> = (0..10u16)
        .map(|p| {
            craft::nack(
                SENDER,
                media,
                (0..31u16).map(|i| (first.wrapping_add((p * 31 + i) * 17), 0xffff)),
            )
        })
        .collect();
    craft::compound(SENDER, &packets)
}

/// The `i`-th hostile compound for a participant whose media SSRC is `media`. Cycles through
/// the kinds; the caller protects it (a replay is the caller's: send one datagram twice).
pub fn compound(i: u32, media: u32) -> Vec<u8> {
    match i % 6 {
        // NACK storms walk the whole sequence space.
        0 | 1 => nack_storm(media, (i.wrapping_mul(5_270) & 0xffff) as u16),
        2 => craft::compound(
            SENDER,
            &[
                craft::pli(SENDER, media),
                craft::fir(SENDER, media, i as u8),
            ],
        ),
        3 => craft::compound(SENDER, &[craft::remb(SENDER, 0, &[media])]),
        4 => {
            // Lengths that disagree (a count of 31 with one block, a length far beyond the
            // datagram) and, one time in two, thousands of report blocks (~60 KB, below the
            // UDP limit).
            let one = craft::rr(SENDER, 1, media);
            let mut parts = vec![
                craft::packet(31, 201, &one[4..], None),
                craft::packet(1, 201, &one[4..], Some(0xffff)),
            ];
            if i % 12 == 4 {
                parts.extend((0..80).map(|_| craft::rr(SENDER, 31, media)));
            }
            craft::compound(SENDER, &parts)
        }
        // A compound "from" the participant's own SSRC.
        _ => craft::compound(media, &[craft::pli(SENDER, media)]),
    }
}
