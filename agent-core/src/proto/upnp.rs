//! The device element of a UPnP description (the XML a device serves at the LOCATION of its
//! SSDP answers): what its maker and its user call it. A few tags of a document that may be cut
//! by the snapshot, so not an XML parser: the first complete `<tag>text</tag>` of each.

use serde::Serialize;

use super::text;

/// Characters kept of each value: names, not documents.
const MAX_VALUE: usize = 128;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpnpDevice {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_number: Option<String>,
}

/// The device of a description body, if the body is one (it names a `<device>` with at least
/// one of the tags).
pub fn parse_description(body: &[u8]) -> Option<UpnpDevice> {
    let device = find(body, b"<device>").or_else(|| find(body, b"<device "))?;
    let body = body.get(device..)?;
    let d = UpnpDevice {
        friendly_name: tag(body, "friendlyName"),
        manufacturer: tag(body, "manufacturer"),
        model_name: tag(body, "modelName"),
        model_number: tag(body, "modelNumber"),
    };
    (d != UpnpDevice::default()).then_some(d)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The text of the first complete `<name>...</name>`, entities decoded, trimmed; none if empty.
fn tag(body: &[u8], name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = find(body, open.as_bytes())? + open.len();
    let rest = body.get(start..)?;
    let end = find(rest, close.as_bytes())?;
    let value = decode_entities(&text(rest.get(..end)?));
    let value: String = value.trim().chars().take(MAX_VALUE).collect();
    (!value.is_empty()).then_some(value)
}

fn decode_entities(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIDLNA: &str = concat!(
        "<?xml version=\"1.0\"?>\r\n<root xmlns=\"urn:schemas-upnp-org:device-1-0\">",
        "<specVersion><major>1</major><minor>0</minor></specVersion><device>",
        "<deviceType>urn:schemas-upnp-org:device:MediaServer:1</deviceType>",
        "<friendlyName>Living Room &amp; Kitchen</friendlyName><manufacturer>Justin Maggard</manufacturer>",
        "<modelName>Windows Media Connect compatible (MiniDLNA)</modelName><modelNumber>1.3.0</modelNumber>",
    );

    #[test]
    fn the_device_of_a_description_even_cut() {
        let d = parse_description(MINIDLNA.as_bytes()).expect("a description");
        assert_eq!(d.friendly_name.as_deref(), Some("Living Room & Kitchen"));
        assert_eq!(d.manufacturer.as_deref(), Some("Justin Maggard"));
        assert_eq!(d.model_name.as_deref(), Some("Windows Media Connect compatible (MiniDLNA)"));
        assert_eq!(d.model_number.as_deref(), Some("1.3.0"));
        // Cut inside the model name: what came before stays.
        let cut = &MINIDLNA.as_bytes()[..MINIDLNA.find("Compatible").unwrap_or(MINIDLNA.len() - 40)];
        let d = parse_description(cut).expect("a cut description");
        assert_eq!((d.friendly_name.is_some(), d.model_name), (true, None));
    }

    #[test]
    fn other_bodies_are_not_descriptions() {
        assert_eq!(parse_description(b"<html><body>friendlyName</body></html>"), None);
        assert_eq!(parse_description(b"<device><friendlyName></friendlyName></device>"), None);
        assert_eq!(parse_description(b""), None);
        let long = format!("<device><friendlyName>{}</friendlyName>", "x".repeat(1000));
        assert_eq!(parse_description(long.as_bytes()).and_then(|d| d.friendly_name).map(|n| n.len()), Some(MAX_VALUE));
    }
}
