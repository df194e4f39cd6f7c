//! Byte fixtures shaped like the talk's traffic (addresses moved to test ranges where they
//! are Internet hosts). `proto::tests::write_seed_corpus` writes them to `fuzz/corpus/`.

use super::Kind;

pub fn all() -> Vec<(Kind, &'static str, Vec<u8>)> {
    let mut dns_tcp = (dns_cname_chain().len() as u16).to_be_bytes().to_vec();
    dns_tcp.extend(dns_cname_chain());
    let hello = tls13_client_hello();
    let hello_cut = hello.get(..hello.len() / 2).unwrap_or_default().to_vec();
    // Rejected on purpose ("bad_"): a name that points back at its own start.
    let mut dns_loop = header(1, 0, [1, 0, 0, 0]);
    dns_loop.extend([1, b'a', 0xc0, 12, 0, 1, 0, 1]);
    vec![
        (Kind::Ssdp, "msearch", ssdp_msearch()),
        (Kind::Ssdp, "notify", ssdp_notify()),
        (Kind::Ssdp, "response", ssdp_response()),
        (Kind::Mdns, "announcement", mdns_announcement()),
        (Kind::Dns, "mdns_announcement", mdns_announcement()),
        (Kind::Dns, "cname_chain", dns_cname_chain()),
        (Kind::Dns, "cname_chain_tcp", dns_tcp),
        (Kind::Dns, "bad_pointer_loop", dns_loop),
        (Kind::Ntp, "client", ntp_client()),
        (Kind::Ntp, "server", ntp_server()),
        (Kind::Http, "get_range", http_get_range()),
        (Kind::Http, "partial_content", http_206()),
        (Kind::Http, "upnp_description", http_upnp_description()),
        (Kind::Http, "cut_non_utf8", b"GET /snap.jpg HTTP/1.1\r\nUser-Agent: IPC\xff\xfe\r\nRan".to_vec()),
        (Kind::Dhcp, "discover", dhcp_discover()),
        (Kind::Dhcp, "solicit_v6", dhcpv6_solicit()),
        (Kind::Tls, "client_hello_tls13", hello),
        (Kind::Tls, "client_hello_cut", hello_cut),
        (Kind::Mqtt, "connect_credentials_tcp", mqtt_connect_credentials()),
        (Kind::Mqtt, "connect_anonymous_tcp", mqtt_connect_anonymous()),
        (Kind::Mqtt, "publish_tcp", mqtt_publish()),
        (Kind::Flow, "cleartext_udp", br#"{"devSerial":"E25105525","password":"ABCDEF","ssid":"home-wifi"}"#.to_vec()),
        (Kind::Flow, "binary_tcp", vec![0x9e, 0x00, 0x01, 0xff, 0x7f, 0x45, 0x5a, 0x00, 0x10]),
        (Kind::Icmp, "port_unreachable_dns", icmp_port_unreachable_dns()),
    ]
}

/// The talk's Sonoff door sensor: its DNS query to the gateway answered with ICMP port
/// unreachable (type 3, code 3), quoting the query's IPv4 and UDP headers.
pub fn icmp_port_unreachable_dns() -> Vec<u8> {
    let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
    m.extend([0x45, 0, 0, 61, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 192, 168, 2, 190, 192, 168, 2, 1]);
    m.extend([0xa0, 0x28, 0, 53, 0, 41, 0, 0]);
    m
}

pub fn ssdp_msearch() -> Vec<u8> {
    b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n\
ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nUSER-AGENT: Linux/3.10 UPnP/1.0 EZVIZ/1.0\r\n\r\n"
        .to_vec()
}

pub fn ssdp_notify() -> Vec<u8> {
    b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n\
LOCATION: http://192.168.2.44:8815/rootdesc.xml\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n\
SERVER: Linux/4.9 UPnP/1.1 MiniUPnPd/2.1\r\nUSN: uuid:2fac1234-31f8-11b4-a222-08002b34c003::upnp:rootdevice\r\n\r\n"
        .to_vec()
}

pub fn ssdp_response() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
USN: uuid:2fac1234-31f8-11b4-a222-08002b34c003::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\n\
SERVER: Linux/4.9 UPnP/1.1 MiniUPnPd/2.1\r\nLOCATION: http://192.168.2.44:8815/rootdesc.xml\r\n\r\n"
        .to_vec()
}

fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend(flags.to_be_bytes());
    for c in counts {
        m.extend(c.to_be_bytes());
    }
    m
}

/// Appends a record; returns the offset of its RDATA.
fn rr(m: &mut Vec<u8>, name: &[u8], rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> usize {
    m.extend(name);
    m.extend(rtype.to_be_bytes());
    m.extend(class.to_be_bytes());
    m.extend(ttl.to_be_bytes());
    m.extend((rdata.len() as u16).to_be_bytes());
    let at = m.len();
    m.extend(rdata);
    at
}

fn ptr(offset: usize) -> [u8; 2] {
    (0xc000 | offset as u16).to_be_bytes()
}

/// An unsolicited eWeLink announcement (the talk's 530-byte mDNS responses): PTR, SRV, TXT
/// with a long base64 value, and the A record in the additional section, all compressed.
pub fn mdns_announcement() -> Vec<u8> {
    let mut m = header(0, 0x8400, [0, 3, 0, 1]);
    let service = m.len(); // "_ewelink._tcp.local" at 12
    let local = service + 1 + 8 + 1 + 4;
    let mut inst = vec![18];
    inst.extend(b"eWeLink_1000ac354c");
    inst.extend(ptr(service));
    let inst_at = rr(&mut m, b"\x08_ewelink\x04_tcp\x05local\x00", 12, 1, 4500, &inst);
    let mut srv = vec![0, 0, 0, 0, 0x1f, 0x91]; // prio 0, weight 0, port 8081
    srv.push(18);
    srv.extend(b"eWeLink_1000ac354c");
    srv.extend(ptr(local));
    let srv_at = rr(&mut m, &ptr(inst_at), 33, 0x8001, 120, &srv);
    let mut txt = Vec::new();
    let blob: &[u8] = b"data1=QmFzZTY0RW5jcnlwdGVkU3dpdGNoU3RhdGVGb3JFd2VMaW5rUGx1Z0RldmljZTEwMDBhYzM1NGNPbk9mZlN0YXRlMjAyMw0KaXY9Nzc3";
    for s in [&b"txtvers=1"[..], b"id=1000ac354c", b"type=diy_plug", blob] {
        txt.push(s.len() as u8);
        txt.extend(s);
    }
    rr(&mut m, &ptr(inst_at), 16, 0x8001, 4500, &txt);
    rr(&mut m, &ptr(srv_at + 6), 1, 0x8001, 120, &[192, 168, 2, 154]);
    m
}

/// time.example.com -> CNAME pool.ntp.example.net -> CNAME eu.pool.ntp.example.net -> A.
pub fn dns_cname_chain() -> Vec<u8> {
    let mut m = header(0xbeef, 0x8180, [1, 3, 0, 0]);
    m.extend(b"\x04time\x07example\x03com\x00\x00\x01\x00\x01");
    let pool = rr(&mut m, &ptr(12), 5, 1, 300, b"\x04pool\x03ntp\x07example\x03net\x00");
    let mut eu = b"\x02eu".to_vec();
    eu.extend(ptr(pool));
    let eu_at = rr(&mut m, &ptr(pool), 5, 1, 300, &eu);
    rr(&mut m, &ptr(eu_at), 1, 1, 60, &[203, 0, 113, 7]);
    m
}

pub fn ntp_client() -> Vec<u8> {
    let mut p = vec![0x23, 0, 6, 0xe9];
    p.resize(40, 0);
    p.extend([0xe9, 0x1c, 0x4d, 0x20, 0x91, 0x2b, 0x00, 0x00]); // transmit timestamp
    p
}

pub fn ntp_server() -> Vec<u8> {
    let mut p = vec![0x24, 2, 6, 0xe7, 0, 0, 0, 0x1d, 0, 0, 0, 0x2a, 192, 0, 2, 123];
    for ts in [0xe91c_4d00u32, 0xe91c_4d20, 0xe91c_4d20, 0xe91c_4d20] {
        p.extend(ts.to_be_bytes());
        p.extend(0x1234_5678u32.to_be_bytes());
    }
    p
}

pub fn http_get_range() -> Vec<u8> {
    b"GET /firmware/cam-5.3.0.bin HTTP/1.1\r\nHost: 198.51.100.20:8080\r\nUser-Agent: EZVIZ-OTA/1.0\r\n\
Range: bytes=0-4095\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
        .to_vec()
}

pub fn http_206() -> Vec<u8> {
    b"HTTP/1.1 206 Partial Content\r\nServer: nginx\r\nContent-Type: application/octet-stream\r\n\
Content-Length: 4096\r\nContent-Range: bytes 0-4095/7340032\r\n\r\n"
        .to_vec()
}

/// A UPnP device's answer to a fetch of its description (minidlna's, shortened).
pub fn http_upnp_description() -> Vec<u8> {
    concat!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nContent-Length: 2186\r\n",
        "Server: Debian DLNADOC/1.50 UPnP/1.0 MiniDLNA/1.3.0\r\n\r\n",
        "<?xml version=\"1.0\"?>\r\n<root xmlns=\"urn:schemas-upnp-org:device-1-0\"><device>",
        "<deviceType>urn:schemas-upnp-org:device:MediaServer:1</deviceType>",
        "<friendlyName>Living Room NAS</friendlyName><manufacturer>Justin Maggard</manufacturer>",
        "<modelName>MiniDLNA</modelName><modelNumber>1.3.0</modelNumber></device></root>",
    )
    .as_bytes()
    .to_vec()
}

pub fn dhcp_discover() -> Vec<u8> {
    let mut p = vec![1, 1, 6, 0, 0x3e, 0x1a, 0x7c, 0x02, 0, 0, 0x80, 0];
    p.resize(28, 0); // ciaddr, yiaddr, siaddr, giaddr
    p.extend([0xd8, 0xf1, 0x5b, 0xaa, 0xbb, 0xcc]);
    p.resize(236, 0); // chaddr padding, sname, file
    p.extend([99, 130, 83, 99]);
    p.extend([53, 1, 1]);
    p.extend([61, 7, 1, 0xd8, 0xf1, 0x5b, 0xaa, 0xbb, 0xcc]);
    p.extend([50, 4, 192, 168, 77, 23]);
    p.extend([12, 5]);
    p.extend(b"HS105");
    p.extend([60, 12]);
    p.extend(b"udhcp 1.19.4");
    p.extend([55, 6, 1, 3, 6, 15, 119, 252]);
    p.extend([57, 2, 0x02, 0x40, 0, 255]);
    p
}

pub fn dhcpv6_solicit() -> Vec<u8> {
    let mut p = vec![1, 0x5a, 0x11, 0x07];
    let mut opt = |code: u16, data: &[u8]| {
        p.extend(code.to_be_bytes());
        p.extend((data.len() as u16).to_be_bytes());
        p.extend(data);
    };
    opt(1, &[0, 1, 0, 1, 0x2c, 0x5e, 0x12, 0x34, 0xd8, 0xf1, 0x5b, 0xaa, 0xbb, 0xcc]);
    opt(3, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    opt(8, &[0, 0]);
    opt(39, b"\x00\x0ecam-livingroom\x00");
    opt(16, b"\x00\x00\xa0\x0d\x00\x09ezviz-cam");
    opt(6, &[0, 23, 0, 24, 0, 39]);
    p
}

/// A TLS 1.3 ClientHello built field by field: GREASE, SNI, groups, ALPN, versions,
/// key share, and padding last (so a cut near the end leaves the rest whole).
pub fn tls13_client_hello() -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
        out.extend(ty.to_be_bytes());
        out.extend((data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    let mut exts = Vec::new();
    ext(&mut exts, 0x1a1a, &[]);
    let host = b"a2abc.iot.example.com";
    let mut sni = ((host.len() + 3) as u16).to_be_bytes().to_vec();
    sni.push(0);
    sni.extend((host.len() as u16).to_be_bytes());
    sni.extend(host);
    ext(&mut exts, 0, &sni);
    ext(&mut exts, 10, &[0, 2, 0, 0x1d]);
    ext(&mut exts, 16, b"\x00\x0e\x04mqtt\x08http/1.1");
    ext(&mut exts, 43, &[6, 0x2a, 0x2a, 3, 4, 3, 3]);
    let mut ks = vec![0, 36, 0, 0x1d, 0, 32];
    ks.extend([0x5au8; 32]);
    ext(&mut exts, 51, &ks);
    ext(&mut exts, 21, &[0; 40]);

    let mut body = vec![3, 3];
    body.extend([0x11u8; 32]);
    body.push(32);
    body.extend([0x22u8; 32]);
    body.extend([0, 8, 0x0a, 0x0a, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]);
    body.extend([1, 0]);
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);

    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![22, 3, 1];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

pub fn mqtt_connect_credentials() -> Vec<u8> {
    let mut v = b"\x00\x04MQTT\x04\xc2\x00\x3c\x00\x09E25105525\x00\x05ezviz\x00\x06s3cret".to_vec();
    v.insert(0, v.len() as u8);
    v.insert(0, 0x10);
    v
}

pub fn mqtt_connect_anonymous() -> Vec<u8> {
    let mut v = b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x07plug-01".to_vec();
    v.insert(0, v.len() as u8);
    v.insert(0, 0x10);
    v
}

/// A QoS 1 PUBLISH like the talk's (topic /E25105525/3100/12545), cut after 40 of its 200
/// payload bytes by the snapshot.
pub fn mqtt_publish() -> Vec<u8> {
    let topic = b"/E25105525/3100/12545";
    let len = 2 + topic.len() + 2 + 200; // 225: a two-byte remaining length
    let mut p = vec![0x32, (len & 0x7f) as u8 | 0x80, (len >> 7) as u8];
    p.extend((topic.len() as u16).to_be_bytes());
    p.extend(topic);
    p.extend([0, 7]);
    p.extend([0xabu8; 40]);
    p
}
