//! Vendor names from the IEEE registries (Debian's `ieee-data`): MA-L (24-bit blocks, `oui.csv`),
//! MA-M (28-bit, `mam.csv`), MA-S (36-bit, `oui36.csv`) and the older IAB (36-bit, `iab.csv`).
//!
//! A MA-M or MA-S block lies inside a MA-L block registered to "IEEE Registration Authority", so
//! the longest block that holds a MAC names its vendor. Read from a package, never downloaded at
//! run time. Debian bookworm's copy is from 2022: devices made since may show no vendor;
//! `--enrich.oui-file` points at newer files.

use std::{collections::HashMap, fs, path::Path};

use crate::mac::Mac;

pub const DEFAULT_OUI_FILES: [&str; 4] = [
    "/usr/share/ieee-data/oui.csv",
    "/usr/share/ieee-data/mam.csv",
    "/usr/share/ieee-data/oui36.csv",
    "/usr/share/ieee-data/iab.csv",
];

/// Block sizes in bits, longest first: the order of lookup.
const BLOCK_BITS: [u8; 3] = [36, 28, 24];

/// The registries, compact: the full files hold 45k blocks of 30k organisations, and a hash
/// table of a `String` per block took 3.7 MB where this takes about 1.5.
#[derive(Debug, Default)]
pub struct Oui {
    /// Registered blocks ([`block`]: size and first bits), sorted, each with its organisation's
    /// index in `ends`.
    blocks: Vec<(u64, u32)>,
    /// The organisations' names end to end, each once, and where each ends.
    text: String,
    ends: Vec<u32>,
}

/// A block as a sortable key: its size in bits above its first `bits` bits (`first`).
fn block(bits: u8, first: u64) -> u64 {
    u64::from(bits) << 48 | first
}

/// The block of `bits` bits that holds `mac`.
fn block_of(mac: [u8; 6], bits: u8) -> u64 {
    let v = mac.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    block(bits, v >> (48 - u32::from(bits)))
}

impl Oui {
    /// The registries of `paths`; a file that cannot be read is one warning (vendors are a
    /// nicety), and the others are still used.
    pub fn load(paths: &[impl AsRef<Path>]) -> Self {
        let mut entries = Vec::new();
        for path in paths {
            let path = path.as_ref();
            match fs::read(path) {
                Ok(bytes) => add(&String::from_utf8_lossy(&bytes), &mut entries),
                Err(e) => tracing::warn!(
                    "fewer vendor names: cannot read {} ({e}); install ieee-data (cargo xtask setup) or pass --enrich.oui-file",
                    path.display()
                ),
            }
        }
        Self::from_entries(entries)
    }

    /// One registry, in its CSV form (`MA-M,208593B,IOG Products LLC,...`: the assignment's
    /// hex digits give the block size) or the text form of MA-L (`00-22-72   (hex)\t\tName`).
    pub fn parse(text: &str) -> Self {
        let mut entries = Vec::new();
        add(text, &mut entries);
        Self::from_entries(entries)
    }

    /// Of a block listed twice, the later entry names it.
    fn from_entries(mut entries: Vec<(u64, String)>) -> Self {
        entries.sort_by_key(|e| e.0); // stable: the later of a block stays last
        let mut oui = Self::default();
        let mut ids: HashMap<&str, u32> = HashMap::new();
        for same in entries.chunk_by(|a, b| a.0 == b.0) {
            let (key, name) = &same[same.len() - 1];
            let id = *ids.entry(name).or_insert_with(|| {
                oui.text.push_str(name);
                oui.ends.push(oui.text.len() as u32);
                oui.ends.len() as u32 - 1
            });
            oui.blocks.push((*key, id));
        }
        oui.blocks.shrink_to_fit();
        oui.text.shrink_to_fit();
        oui.ends.shrink_to_fit();
        oui
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The vendor of a MAC, from its longest registered block; locally administered MACs
    /// (randomised, virtual) and group addresses have none.
    pub fn vendor(&self, mac: Mac) -> Option<&str> {
        if mac.is_local() || mac.is_group() {
            return None;
        }
        let id = BLOCK_BITS.iter().find_map(|bits| {
            let key = block_of(mac.0, *bits);
            self.blocks.binary_search_by_key(&key, |b| b.0).ok().map(|i| self.blocks[i].1 as usize)
        })?;
        let start = if id == 0 { 0 } else { self.ends[id - 1] as usize };
        self.text.get(start..self.ends[id] as usize)
    }
}

/// The blocks a registry's text assigns, with their organisations, in the order listed.
fn add(text: &str, entries: &mut Vec<(u64, String)>) {
    for line in text.lines() {
        let (digits, name) = if let Some((hex, name)) = line.split_once("(hex)") {
            (hex.trim().split('-').collect::<String>(), name.trim().to_owned())
        } else if let Some((_registry, rest)) = line.split_once(',')
            && let Some((assignment, rest)) = rest.split_once(',')
        {
            (assignment.to_owned(), csv_field(rest))
        } else {
            continue;
        };
        let bits = digits.len() * 4;
        if name.is_empty() || !BLOCK_BITS.contains(&(bits as u8)) {
            continue;
        }
        if let Ok(v) = u64::from_str_radix(&digits, 16) {
            entries.push((block(bits as u8, v), name));
        }
    }
}

/// The first field of `rest`: quoted (`"Name, Inc."`, `""` for a quote) or up to the next comma.
fn csv_field(rest: &str) -> String {
    let Some(quoted) = rest.strip_prefix('"') else {
        return rest.split(',').next().unwrap_or_default().trim().to_owned();
    };
    let mut out = String::new();
    let mut chars = quoted.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if chars.peek() == Some(&'"') => {
                out.push('"');
                chars.next();
            }
            '"' => break,
            c => out.push(c),
        }
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: fn(&str) -> Mac = |s| s.parse().unwrap();

    #[test]
    fn the_longest_registered_block_names_the_vendor() {
        let oui = Oui::parse(concat!(
            "Registry,Assignment,Organization Name,Organization Address\n",
            "MA-L,70B3D5,IEEE Registration Authority,445 Hoes Lane Piscataway NJ US 08554\n",
            "MA-L,809F9B,\"Sichuan AI-Link Technology Co., Ltd.\",\"Chengdu, CN\"\n",
            "MA-M,208593B,IOG Products LLC,9737 LURLINE AVENUE CHATSWORTH CA US 91311\n",
            "MA-S,70B3D5F2F,TELEPLATFORMS,\"Polbina st., 3/1 Moscow  RU 109388 \"\n",
            "MA-S,70B3D5720,\"Quote \"\"Inc\"\"\",\n",
        ));
        assert_eq!(oui.len(), 5);
        let v = |s| oui.vendor(MAC(s));
        assert_eq!(v("80:9f:9b:45:a3:28"), Some("Sichuan AI-Link Technology Co., Ltd."), "MA-L, quoted with a comma");
        assert_eq!(v("20:85:93:b1:22:33"), Some("IOG Products LLC"), "MA-M: 28 bits");
        assert_eq!(v("20:85:93:c1:22:33"), None, "the next MA-M block is someone else's");
        assert_eq!(v("70:b3:d5:f2:f1:23"), Some("TELEPLATFORMS"), "MA-S: 36 bits, inside the IEEE's MA-L");
        assert_eq!(v("70:b3:d5:72:0f:ff"), Some("Quote \"Inc\""));
        assert_eq!(v("70:b3:d5:11:11:11"), Some("IEEE Registration Authority"), "no MA-S block: the MA-L");
        assert_eq!(v("82:9f:9b:45:a3:28"), None, "locally administered");
        assert_eq!(v("81:9f:9b:45:a3:28"), None, "group");
    }

    #[test]
    fn a_block_listed_again_takes_the_later_name_and_names_are_shared() {
        let oui = Oui::parse(concat!(
            "MA-L,809F9B,Old Name Ltd.,\n",
            "MA-L,B827EB,Raspberry Pi Foundation,\n",
            "MA-L,DCA632,Raspberry Pi Trading Ltd,\n",
            "MA-L,809F9B,New Name Ltd.,\n",
            "MA-L,E45F01,Raspberry Pi Trading Ltd,\n",
        ));
        assert_eq!(oui.len(), 4);
        assert_eq!(oui.vendor(MAC("80:9f:9b:00:00:01")), Some("New Name Ltd."));
        assert_eq!(oui.vendor(MAC("b8:27:eb:00:00:01")), Some("Raspberry Pi Foundation"));
        assert_eq!(oui.vendor(MAC("dc:a6:32:00:00:01")), Some("Raspberry Pi Trading Ltd"));
        assert_eq!(oui.vendor(MAC("e4:5f:01:00:00:01")), Some("Raspberry Pi Trading Ltd"));
        assert_eq!(oui.ends.len(), 3, "each organisation's name held once");
        assert_eq!(oui.vendor(MAC("e4:5f:02:00:00:01")), None);
    }

    #[test]
    fn the_text_form_of_ma_l_still_reads() {
        let oui = Oui::parse(
            "OUI/MA-L  Organization\n\n80-9F-9B   (hex)\t\tSichuan AI-Link Technology Co., Ltd.\n809F9B     (base 16)\t\tSichuan AI-Link Technology Co., Ltd.\n\t\t\t\tAddress\n",
        );
        assert_eq!(oui.len(), 1);
        assert_eq!(oui.vendor(MAC("80:9f:9b:45:a3:28")), Some("Sichuan AI-Link Technology Co., Ltd."));
    }

    /// Debian's ieee-data, where it is installed: all three block sizes resolve.
    #[test]
    fn debians_registries_resolve_every_block_size() {
        if !Path::new(DEFAULT_OUI_FILES[0]).exists() {
            assert!(std::env::var_os("CI").is_none(), "CI installs ieee-data (cargo xtask setup)");
            return;
        }
        let oui = Oui::load(&DEFAULT_OUI_FILES);
        assert!(oui.len() > 30_000, "{} blocks", oui.len());
        assert_eq!(oui.vendor(MAC("20:85:93:b1:22:33")), Some("IOG Products LLC"));
        assert_eq!(oui.vendor(MAC("70:b3:d5:f2:f1:23")), Some("TELEPLATFORMS"));
        assert!(oui.vendor(MAC("b8:27:eb:00:00:01")).is_some_and(|v| v.contains("Raspberry")));
    }
}
