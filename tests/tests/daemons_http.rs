//! Real daemons as the peers (the lab: `iotwatch_tests::daemons`): nginx, HTTP.

use std::{fs, time::Duration};

use iotwatch_tests::{daemons::*, privileged_test};

// nginx: HTTP requests and responses, including a Range request for a firmware image.
privileged_test! {
    fn nginx_http_with_range() {
        let lab = lab("iwd1", false);
        let (d1, d2) = (lab.devices[0].clone(), lab.devices[1].clone());
        let dir = Workdir::new("iwd1");
        for d in ["www/fw", "tmp"] {
            dir.mkdir(d);
        }
        let desc = "<?xml version=\"1.0\"?>\n<root xmlns=\"urn:schemas-upnp-org:device-1-0\"><device><friendlyName>IWD Camera</friendlyName></device></root>\n";
        fs::write(dir.path("www/rootdesc.xml"), desc).expect("write");
        // A firmware-like binary: 64 KiB, deterministic, not text.
        let fw: Vec<u8> = (0u32..65536).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        fs::write(dir.path("www/fw/camera-2.1.bin"), &fw).expect("write");
        let listen = format!("{}:8815", d2.ip);
        let conf = dir.config("nginx.conf", "nginx.conf", &[("@LISTEN@", &listen)]);
        let (agent, events) = start_agent(&lab, &dir, 19481);
        let mut nginx = Daemon::spawn(
            &lab,
            &d2.ns,
            &dir,
            "nginx",
            &["nginx", "-p", &dir.text(""), "-c", &conf, "-e", &dir.text("nginx-error.log")],
        );
        wait_listening(&lab, &d2.ns, "-t", 8815, &mut nginx);

        let base = format!("http://{listen}");
        let body =
            run(&lab, &d1.ns, 10, &["curl", "-sS", "--fail", "-A", "iwd-camera/2.0", &format!("{base}/rootdesc.xml")]);
        assert_eq!(body, desc, "nginx served the description");
        let part = dir.path("part.bin");
        run(
            &lab,
            &d1.ns,
            10,
            &[
                "curl",
                "-sS",
                "--fail",
                "-A",
                "iwd-camera/2.0",
                "-r",
                "0-4095",
                "-o",
                &part.display().to_string(),
                &format!("{base}/fw/camera-2.1.bin"),
            ],
        );
        assert_eq!(fs::read(&part).expect("part"), fw[..4096], "nginx served the range");

        let (a, b) = (d1.mac.as_str(), d2.mac.as_str());
        let (aip, bip) = (d1.ip.to_string(), d2.ip.to_string());
        let host = listen.as_str();
        let fw_len = fw.len() as f64;
        let desc_len = desc.len() as f64;
        let req = |uri: &'static str| {
            let (a, aip, bip) = (a.to_owned(), aip.clone(), bip.clone());
            move |e: &Event| {
                e.kind() == "http"
                    && same(e.s("src_mac"), &a)
                    && same(e.s("src_ip"), &aip)
                    && same(e.s("dst_ip"), &bip)
                    && num_is(e.n("dst_port"), 8815.0)
                    && same(e.s("method"), "GET")
                    && same(e.s("uri"), uri)
                    && same(e.s("host"), host)
                    && same(e.s("user_agent"), "iwd-camera/2.0")
            }
        };
        let desc_req = req("/rootdesc.xml");
        let fw_req = req("/fw/camera-2.1.bin");
        let events = wait_events(
            &events,
            Duration::from_secs(15),
            &["http"],
            &[
                ("GET /rootdesc.xml from device 1 (host, user_agent, no range)", &|e| {
                    desc_req(e) && e.s("range").is_none()
                }),
                ("GET /fw/camera-2.1.bin with range \"bytes=0-4095\"", &|e| {
                    fw_req(e) && same(e.s("range"), "bytes=0-4095")
                }),
                ("200 response from device 2 with content_type text/xml and content_length", &|e| {
                    e.kind() == "http"
                        && same(e.s("src_mac"), b)
                        && num_is(e.n("src_port"), 8815.0)
                        && num_is(e.n("status"), 200.0)
                        && same(e.s("content_type"), "text/xml")
                        && num_is(e.n("content_length"), desc_len)
                }),
                ("206 response from device 2 with content_range \"bytes 0-4095/65536\"", &|e| {
                    e.kind() == "http"
                        && same(e.s("src_mac"), b)
                        && num_is(e.n("src_port"), 8815.0)
                        && num_is(e.n("status"), 206.0)
                        && same(e.s("content_range"), &format!("bytes 0-4095/{fw_len}"))
                        && num_is(e.n("content_length"), 4096.0)
                        && same(e.s("content_type"), "application/octet-stream")
                }),
            ],
        );
        // Exactly two requests and two responses on port 8815.
        let http: Vec<&Event> = events.iter().filter(|e| e.kind() == "http").collect();
        assert_eq!(
            http.iter().filter(|e| e.s("method").is_some()).count(),
            2,
            "two requests:\n{}",
            show(&events, &["http"])
        );
        assert_eq!(
            http.iter().filter(|e| e.n("status").is_some()).count(),
            2,
            "two responses:\n{}",
            show(&events, &["http"])
        );
        check_metrics(&agent, &[(a, "http"), (b, "http")]);
        nginx.check_alive();
    }
}
