//! Which company runs a peer's network: the cloud, CDN or hosting provider behind an ASN.
//!
//! Two rules, in order:
//! 1. the ASN is one of a provider's in [`PROVIDERS`];
//! 2. else the organisation name starts with one of a provider's name prefixes (compared
//!    without case, and followed by the end or by a character that is not a letter or
//!    digit, so `Amazonia Telecom` is not Amazon).
//!
//! Every ASN below was checked against the organisation that ip-location-db's `asn`
//! 2.3.2026061719 (2026-06-17) gives it: the provider's name prefixes match it. Every name
//! prefix matches at least one organisation there, and all it matches were read
//! (`peerdb::tests::provider_table_agrees_with_shipped_data`, ignored by default: it needs
//! the installed files). MaxMind's GeoLite2-ASN names networks by their handles
//! (`AMAZON-02`, `GOOGLE`), which these prefixes do not match: the ASNs carry those. Names that other companies also bear were left out or narrowed:
//! `Amazon` alone would match `AMAZON TELECOM LTDA` and `Amazon+ Servicos de Internet`
//! (Brazilian ISPs), `Apple` matches `Apple Bank for Savings`, `Azure` an unrelated Hong
//! Kong company, `Alibaba` `Alibaba Travel Company`, `Google Fiber` is an ISP. Linode's
//! original AS 63949 is registered to Akamai, which bought Linode in 2022: it counts as
//! Akamai; the `Linode, LLC` AS 48337 as Linode.

use std::{collections::HashMap, sync::LazyLock};

/// A provider: its name, its ASNs, and the prefixes of its organisation names.
#[derive(Debug, Clone, Copy)]
pub struct Provider {
    pub name: &'static str,
    pub asns: &'static [u32],
    pub org_prefixes: &'static [&'static str],
}

const fn p(name: &'static str, asns: &'static [u32], org_prefixes: &'static [&'static str]) -> Provider {
    Provider { name, asns, org_prefixes }
}

/// The providers iotwatch names, with the ASNs and organisation-name prefixes that identify
/// them (README, "Peer databases", lists them).
pub const PROVIDERS: &[Provider] = &[
    p(
        "Amazon",
        &[16509, 14618, 8987, 38895, 801, 7224, 62785, 214101, 400098, 36263, 21664],
        &["Amazon.com", "Amazon Technologies", "Amazon Data Services"],
    ),
    p(
        "Google",
        &[
            15169, 396982, 394089, 36384, 396178, 43515, 19527, 36492, 36040, 36411, 36383, 214611, 214609, 395973,
            139190, 41264, 45566, 33715, 16550, 394507, 394639, 36190,
        ],
        &[
            "Google LLC",
            "Google, LLC",
            "Google Cloud",
            "Google Ireland",
            "Google Asia Pacific",
            "Google Switzerland",
            "Google Singapore",
            "Nest Labs",
        ],
    ),
    p(
        "Microsoft",
        &[
            8075, 8070, 35106, 3598, 8069, 200517, 8068, 12076, 54396, 46182, 17144, 45139, 58862, 63314, 30520, 5761,
            8071,
        ],
        &[
            "Microsoft Corporation",
            "Microsoft Limited",
            "Microsoft Deutschland",
            "Microsoft Singapore",
            "Microsoft (China)",
        ],
    ),
    p(
        "Alibaba",
        &[37963, 45102, 134963, 24429],
        &["Alibaba (US)", "Alibaba Cloud", "Hangzhou Alibaba", "Zhejiang Taobao"],
    ),
    p("Tencent", &[45090, 132203, 133478, 132591, 137876], &["Tencent", "Shenzhen Tencent"]),
    p(
        "Akamai",
        &[
            20940, 16625, 63949, 35994, 36183, 32787, 12222, 34164, 24319, 21342, 33905, 213120, 200005, 17204, 26008,
            31108, 393560, 55770, 49846, 33047, 18717, 35204, 393234, 31984,
        ],
        &["Akamai"],
    ),
    p("Cloudflare", &[13335, 209242, 14789, 132892, 202623, 395747, 203898, 394536, 139242, 400095], &["Cloudflare"]),
    p("Apple", &[714, 6185, 31128], &["Apple Inc", "Apple Distribution International"]),
    p("Fastly", &[54113], &["Fastly"]),
    p("OVH", &[16276, 35540], &["OVH SAS"]),
    p("Hetzner", &[24940, 213230, 212317, 215859], &["Hetzner Online"]),
    p("DigitalOcean", &[14061, 393406, 46652], &["DigitalOcean"]),
    p("Meta", &[32934, 63293, 54115, 149642, 11917], &["Facebook", "WhatsApp"]),
    p(
        "Oracle",
        &[
            31898, 54253, 64102, 33517, 20054, 6142, 46558, 11049, 11506, 1215, 1218, 1219, 14544, 20037, 15135, 24185,
            393773, 11479, 18916, 52019, 15519, 206209, 200705, 200981,
        ],
        &["Oracle Corporation", "Oracle Svenska", "Oracle America"],
    ),
    p("Linode", &[48337], &["Linode"]),
    p("Vultr", &[20473, 46407, 11508, 54094], &["The Constant Company"]),
    p("Huawei Cloud", &[55990, 136907, 141180, 131444, 151610], &["Huawei Cloud", "HUAWEI INTERNATIONAL"]),
    p("Baidu", &[38365, 55967, 38627, 133746, 63288, 199506], &["Baidu", "Beijing Baidu Netcom"]),
    p("ByteDance", &[396986, 150436, 138699], &["Bytedance", "Byteplus", "TikTok Pte"]),
    p("Netflix", &[2906, 40027, 55095], &["Netflix"]),
    p("IBM Cloud", &[36351], &["IBM Cloud"]),
    p("Salesforce", &[14340, 394808, 396417, 22606, 393517], &["Salesforce"]),
    p("Scaleway", &[12876, 29447, 54265, 202023], &["Scaleway"]),
    p("Zscaler", &[22616, 53813, 62044, 62907, 53444], &["Zscaler"]),
    p("Yandex", &[13238, 200350, 44534, 210656, 215013], &["YANDEX LLC", "Yandex.Cloud"]),
    p("Xiaomi", &[63855, 63915], &["XIAOMI H.K."]),
    p("Signify (Philips Hue)", &[202893], &["Lighting-INTERNET Signify"]),
    p("Roku", &[394557], &["Roku Inc"]),
    p("Ubiquiti", &[27625], &["Ubiquiti Networks"]),
    p("Cisco Meraki", &[395831], &["Meraki"]),
    p("Tesla", &[394161], &["Tesla Motors"]),
    p("Sony Interactive", &[33353, 11795, 397077, 13989], &["Sony Interactive Entertainment"]),
];

static BY_ASN: LazyLock<HashMap<u32, &'static str>> =
    LazyLock::new(|| PROVIDERS.iter().flat_map(|p| p.asns.iter().map(|&a| (a, p.name))).collect());

/// The provider of an ASN from the table alone.
pub fn provider_of_asn(asn: u32) -> Option<&'static str> {
    BY_ASN.get(&asn).copied()
}

/// The provider whose organisation-name prefix `org` starts with.
pub fn provider_of_org(org: &str) -> Option<&'static str> {
    let org = org.trim_start();
    PROVIDERS.iter().find(|p| p.org_prefixes.iter().any(|pre| starts_with_word(org, pre))).map(|p| p.name)
}

/// The provider of a peer: by ASN, else by organisation name.
pub fn provider_of(asn: Option<u32>, org: Option<&str>) -> Option<&'static str> {
    asn.and_then(provider_of_asn).or_else(|| org.and_then(provider_of_org))
}

/// `text` starts with `prefix` (ASCII case ignored) followed by its end or a character that
/// is neither a letter nor a digit.
pub(crate) fn starts_with_word(text: &str, prefix: &str) -> bool {
    let (t, p) = (text.as_bytes(), prefix.as_bytes());
    t.len() >= p.len()
        && t[..p.len()].eq_ignore_ascii_case(p)
        && t.get(p.len()).is_none_or(|c| !c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn known_asns() {
        for (asn, name) in [
            (16509, "Amazon"),
            (15169, "Google"),
            (8075, "Microsoft"),
            (45102, "Alibaba"),
            (132203, "Tencent"),
            (20940, "Akamai"),
            (13335, "Cloudflare"),
            (714, "Apple"),
            (54113, "Fastly"),
            (16276, "OVH"),
            (24940, "Hetzner"),
            (14061, "DigitalOcean"),
            (32934, "Meta"),
            (31898, "Oracle"),
            (48337, "Linode"),
            (20473, "Vultr"),
            (55990, "Huawei Cloud"),
            (38365, "Baidu"),
            (396986, "ByteDance"),
            (2906, "Netflix"),
        ] {
            assert_eq!(provider_of(Some(asn), None), Some(name), "AS{asn}");
        }
        assert_eq!(provider_of(Some(64512), None), None, "a private ASN");
        assert_eq!(provider_of(None, None), None);
    }

    #[test]
    fn org_fallback() {
        assert_eq!(provider_of(Some(4_200_000_000), Some("Amazon.com, Inc.")), Some("Amazon"));
        assert_eq!(provider_of(None, Some("amazon data services Japan")), Some("Amazon"));
        assert_eq!(provider_of(None, Some("Google Cloud EMEA Ltd")), Some("Google"));
        assert_eq!(provider_of(None, Some("Cloudflare London, LLC")), Some("Cloudflare"));
        assert_eq!(provider_of(None, Some("  Akamai International B.V.")), Some("Akamai"));
        assert_eq!(provider_of(None, Some("The Constant Company, LLC")), Some("Vultr"));
        // The ASN wins over the name.
        assert_eq!(provider_of(Some(13335), Some("Amazon.com, Inc.")), Some("Cloudflare"));
        // Names other companies also bear.
        for org in [
            "AMAZONIA TELECOMUNICACOES LTDA",
            "AMAZON TELECOM LTDA",
            "Amazon+ SERVICOS DE INTERNET LTDA",
            "Apple Bank for Savings",
            "AZURE TECHNOLOGY CO., LIMITED",
            "Alibaba Travel Company (LTD)",
            "Google Fiber Inc.",
            "Akamaix",
            "",
        ] {
            assert_eq!(provider_of(None, Some(org)), None, "{org}");
        }
    }

    #[test]
    fn table_has_no_duplicates() {
        let mut seen = HashSet::new();
        for p in PROVIDERS {
            assert!(!p.asns.is_empty() && !p.org_prefixes.is_empty(), "{}", p.name);
            for a in p.asns {
                assert!(seen.insert(*a), "AS{a} listed twice");
            }
        }
        let names: HashSet<&str> = PROVIDERS.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), PROVIDERS.len());
    }
}
