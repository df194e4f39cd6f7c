//! MAC addresses as text: lowercase `aa:bb:cc:dd:ee:ff`, the form used in every label and report.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        // Through `pad`, so that widths in tables (`{:<17}`) apply.
        f.pad(&format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]))
    }
}

crate::serialize_as_text!(Mac);

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| format!("{s:?} is not a MAC address"))?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC address"));
        }
        Ok(Mac(out))
    }
}

impl Mac {
    /// Group bit: multicast (broadcast included). Such MACs are destinations, never devices.
    pub fn is_group(&self) -> bool {
        agent_common::classify::is_group_mac(&self.0)
    }
    pub fn is_broadcast(&self) -> bool {
        agent_common::classify::is_broadcast_mac(&self.0)
    }
    /// Locally administered (randomised or virtual): no IEEE vendor.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_lowercase() {
        let m: Mac = "02:77:00:00:00:0A".parse().unwrap();
        assert_eq!(m.to_string(), "02:77:00:00:00:0a");
        assert!(m.is_local());
        assert!(!m.is_group());
        assert!("02:77:00:00:00".parse::<Mac>().is_err());
        assert!("02:77:00:00:00:00:01".parse::<Mac>().is_err());
        assert!("zz:77:00:00:00:00".parse::<Mac>().is_err());
        assert!("ff:ff:ff:ff:ff:ff".parse::<Mac>().unwrap().is_broadcast());
    }
}
