//! Vendor names from the IEEE MA-L registry (Debian's `ieee-data`, `oui.txt`).
//!
//! Read from a package, never downloaded at run time. Debian bookworm's copy is from 2022:
//! devices made since may show no vendor; `--enrich.oui-file` points at a newer file.

use std::{collections::HashMap, fs, path::Path};

use crate::mac::Mac;

pub const DEFAULT_OUI_FILE: &str = "/usr/share/ieee-data/oui.txt";

#[derive(Debug, Default)]
pub struct Oui {
    vendors: HashMap<[u8; 3], String>,
}

impl Oui {
    /// An empty table (and a warning) when the file is missing: vendors are a nicety.
    pub fn load(path: &Path) -> Self {
        match fs::read(path) {
            Ok(bytes) => Self::parse(&String::from_utf8_lossy(&bytes)),
            Err(e) => {
                tracing::warn!(
                    "no vendor names: cannot read {} ({e}); install ieee-data or pass --enrich.oui-file",
                    path.display()
                );
                Self::default()
            }
        }
    }

    /// Lines of the form `00-22-72   (hex)\t\tAmerican Micro-Fuel Device Corp.`.
    pub fn parse(text: &str) -> Self {
        let mut vendors = HashMap::new();
        for line in text.lines() {
            let Some((prefix, name)) = line.split_once("(hex)") else { continue };
            let hex: Vec<u8> = prefix.trim().split('-').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
            if let [a, b, c] = hex[..] {
                vendors.insert([a, b, c], name.trim().to_owned());
            }
        }
        Self { vendors }
    }

    pub fn len(&self) -> usize {
        self.vendors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vendors.is_empty()
    }

    /// The vendor of a MAC; locally administered MACs (randomised, virtual) have none.
    pub fn vendor(&self, mac: Mac) -> Option<&str> {
        if mac.is_local() || mac.is_group() {
            return None;
        }
        self.vendors.get(&[mac.0[0], mac.0[1], mac.0[2]]).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_lines_only() {
        let oui = Oui::parse(
            "OUI/MA-L  Organization\n\n80-9F-9B   (hex)\t\tSichuan AI-Link Technology Co., Ltd.\n809F9B     (base 16)\t\tSichuan AI-Link Technology Co., Ltd.\n\t\t\t\tAddress\n",
        );
        assert_eq!(oui.len(), 1);
        assert_eq!(oui.vendor(Mac([0x80, 0x9f, 0x9b, 0x45, 0xa3, 0x28])), Some("Sichuan AI-Link Technology Co., Ltd."));
        assert_eq!(oui.vendor(Mac([0x02, 0x9f, 0x9b, 0x45, 0xa3, 0x28])), None);
    }
}
