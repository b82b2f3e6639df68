//! What the SFU reads of an H.264 RTP payload (RFC 6184): whether it starts
//! a keyframe, and the picture width an SPS announces, so that a layer's size
//! is known as it is for VP8 (from its keyframe header).

const IDR: u8 = 5;
const SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// The NAL units of a payload: itself, or each one a STAP-A aggregates.
/// A fragment (FU-A) yields nothing: its first byte is not a NAL header.
fn units(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let aggregate = payload.first().is_some_and(|b| b & 0x1f == STAP_A);
    let mut single = (!aggregate && !payload.is_empty() && payload[0] & 0x1f != FU_A).then_some(payload);
    let mut at = 1;
    std::iter::from_fn(move || {
        if let Some(unit) = single.take() {
            return Some(unit);
        }
        if !aggregate || at + 2 > payload.len() {
            return None;
        }
        let size = usize::from(u16::from_be_bytes([payload[at], payload[at + 1]]));
        let unit = payload.get(at + 2..at + 2 + size)?;
        at += 2 + size;
        Some(unit)
    })
    .filter(|unit| !unit.is_empty())
}

/// A packet carrying an IDR slice or the SPS that comes before one: alone,
/// in a STAP-A, or as the first fragment of an FU-A.
pub fn is_keyframe(payload: &[u8]) -> bool {
    if payload.first().is_some_and(|b| b & 0x1f == FU_A) {
        return payload.get(1).is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == IDR);
    }
    units(payload).any(|unit| matches!(unit[0] & 0x1f, IDR | SPS))
}

/// The picture width (after cropping) of the SPS this packet carries, if
/// it carries one; `None` too for an SPS cut short or out of range.
pub fn sps_width(payload: &[u8]) -> Option<u16> {
    let sps = units(payload).find(|unit| unit[0] & 0x1f == SPS)?;
    let rbsp = unescape(&sps[1..]);
    width(&mut Bits::new(&rbsp))
}

/// The payload without its emulation-prevention bytes (`00 00 03` → `00 00`).
fn unescape(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut zeros = 0;
    for &byte in escaped {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// Reads bits, most significant first; `None` past the end.
struct Bits<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Bits<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = self.bytes.get(self.at / 8)?;
        let bit = (byte >> (7 - self.at % 8)) & 1;
        self.at += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |value, _| Some(value << 1 | self.bit()?))
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    /// Unsigned Exp-Golomb (`ue(v)`), up to 32 bits of value.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    /// Signed Exp-Golomb (`se(v)`).
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// `seq_parameter_set_data()` (H.264 7.3.2.1.1) as far as the width and
/// its cropping.
fn width(bits: &mut Bits) -> Option<u16> {
    let profile = bits.bits(8)?;
    bits.bits(16)?; // constraint flags, level
    bits.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format = bits.ue()?;
        if chroma_format == 3 && bits.flag()? {
            chroma_format = 0; // separate colour planes: cropped as monochrome
        }
        bits.ue()?; // bit_depth_luma_minus8
        bits.ue()?; // bit_depth_chroma_minus8
        bits.flag()?; // qpprime_y_zero_transform_bypass_flag
        if bits.flag()? {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if bits.flag()? {
                    skip_scaling_list(bits, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    bits.ue()?; // log2_max_frame_num_minus4
    match bits.ue()? {
        0 => {
            bits.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            bits.flag()?;
            bits.se()?;
            bits.se()?;
            let cycle = bits.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                bits.se()?;
            }
        }
        _ => {}
    }
    bits.ue()?; // max_num_ref_frames
    bits.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_in_mbs = u64::from(bits.ue()?) + 1;
    bits.ue()?; // pic_height_in_map_units_minus1
    if !bits.flag()? {
        bits.flag()?; // mb_adaptive_frame_field_flag
    }
    bits.flag()?; // direct_8x8_inference_flag
    let crop = if bits.flag()? {
        let (left, right) = (u64::from(bits.ue()?), u64::from(bits.ue()?));
        bits.ue()?;
        bits.ue()?;
        // Cropping counts in chroma samples: two luma columns each for
        // 4:2:0 and 4:2:2, one for 4:4:4 and monochrome.
        let unit = if matches!(chroma_format, 1 | 2) { 2 } else { 1 };
        (left + right) * unit
    } else {
        0
    };
    u16::try_from((width_in_mbs * 16).checked_sub(crop)?).ok().filter(|w| *w > 0)
}

/// Reads past one `scaling_list()` of `size` entries.
fn skip_scaling_list(bits: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + bits.se()? + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes bits for a test SPS (most significant first).
    #[derive(Default)]
    struct Writer {
        bits: Vec<bool>,
    }

    impl Writer {
        fn bits(&mut self, value: u64, n: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.bits.push(value >> i & 1 == 1);
            }
            self
        }

        fn ue(&mut self, value: u64) -> &mut Self {
            let n = 64 - (value + 1).leading_zeros();
            self.bits(0, n - 1).bits(value + 1, n)
        }

        fn se(&mut self, value: i64) -> &mut Self {
            let k = if value > 0 { 2 * value - 1 } else { -2 * value };
            self.ue(k as u64)
        }

        /// The bytes, with the RBSP stop bit, escaped as in a NAL unit.
        fn nal(&mut self, header: u8) -> Vec<u8> {
            self.bits(1, 1);
            while !self.bits.len().is_multiple_of(8) {
                self.bits.push(false);
            }
            let raw: Vec<u8> =
                self.bits.chunks(8).map(|c| c.iter().fold(0u8, |b, bit| b << 1 | u8::from(*bit))).collect();
            let mut out = vec![header];
            let mut zeros = 0;
            for byte in raw {
                if zeros >= 2 && byte <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if byte == 0 { zeros + 1 } else { 0 };
                out.push(byte);
            }
            out
        }
    }

    /// A constrained-baseline SPS as a browser's encoder writes it.
    fn baseline(width_mbs: u64, height_mbs: u64, crop_right: Option<u64>) -> Vec<u8> {
        let mut w = Writer::default();
        w.bits(66, 8).bits(0xc0, 8).bits(31, 8).ue(0).ue(0).ue(0).ue(2).ue(1).bits(0, 1);
        w.ue(width_mbs - 1).ue(height_mbs - 1).bits(1, 1).bits(1, 1);
        match crop_right {
            Some(right) => w.bits(1, 1).ue(0).ue(right).ue(0).ue(0),
            None => w.bits(0, 1),
        };
        w.bits(0, 1); // no VUI
        w.nal(0x67)
    }

    #[test]
    fn the_width_of_a_baseline_sps_alone_and_aggregated() {
        // 960×540: 60×34 macroblocks, cropped by two rows (not the width).
        let sps = baseline(60, 34, None);
        assert_eq!(sps_width(&sps), Some(960));
        // 240 wide from 15 macroblocks; 318 from 20 cropped by one chroma
        // column (two luma columns) on the right.
        assert_eq!(sps_width(&baseline(15, 9, None)), Some(240));
        assert_eq!(sps_width(&baseline(20, 12, Some(1))), Some(318));
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut stap = vec![0x78];
        for unit in [&sps[..], &pps[..]] {
            stap.extend_from_slice(&(unit.len() as u16).to_be_bytes());
            stap.extend_from_slice(unit);
        }
        assert_eq!(sps_width(&stap), Some(960));
        assert!(is_keyframe(&stap));
        // No SPS: a PPS, a slice, a fragment.
        assert_eq!(sps_width(&pps), None);
        assert_eq!(sps_width(&[0x41, 0x9a, 0x00]), None);
        assert_eq!(sps_width(&[0x7c, 0x85, 0x00]), None);
    }

    #[test]
    fn a_high_profile_sps_with_scaling_lists_and_escaped_zeros() {
        let mut w = Writer::default();
        w.bits(100, 8).bits(0, 8).bits(40, 8).ue(0);
        w.ue(1).ue(0).ue(0).bits(0, 1); // 4:2:0, 8 bits
        w.bits(1, 1); // scaling matrices follow
        for i in 0..8 {
            if i == 1 {
                w.bits(1, 1);
                // A list that ends early (next scale 0): one delta of -8.
                w.se(-8);
            } else {
                w.bits(0, 1);
            }
        }
        w.ue(0).ue(1).bits(0, 1).se(0).se(0).ue(2).se(1).se(-1); // poc type 1, cycle of 2
        w.ue(1).bits(0, 1);
        w.ue(119).ue(67).bits(1, 1).bits(1, 1); // 1920×1088
        w.bits(1, 1).ue(0).ue(0).ue(0).ue(4); // cropped to 1080 rows
        w.bits(0, 1);
        let sps = w.nal(0x67);
        assert_eq!(sps_width(&sps), Some(1920));

        // Emulation prevention: `00 00 03` drops the 03.
        assert_eq!(unescape(&[0, 0, 3, 1, 0, 0, 3, 0]), vec![0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn a_short_or_absurd_sps_gives_no_width_and_no_panic() {
        let sps = baseline(60, 34, None);
        for cut in 1..sps.len() - 1 {
            // Cut anywhere before the width is read: nothing, never a guess.
            let got = sps_width(&sps[..cut]);
            assert!(got.is_none() || got == Some(960), "cut at {cut}: {got:?}");
        }
        // Exp-Golomb of more than 32 bits, and a crop wider than the picture.
        assert_eq!(sps_width(&[0x67, 66, 0, 31, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(sps_width(&baseline(1, 1, Some(20))), None);
        // A STAP-A whose sizes run past its end.
        assert_eq!(sps_width(&[0x78, 0x00, 0x40, 0x67, 66]), None);
        assert!(!is_keyframe(&[0x78, 0x00, 0x40, 0x67, 66]));
    }
}
