//! Real daemons as the peers (the lab: `iotwatch_tests::daemons`): OpenSSL's s_server and curl,
//! TLS.

use std::time::Duration;

use iotwatch_tests::{daemons::*, privileged_test};

privileged_test! {
    fn openssl_tls_client_hello_with_sni() {
        let lab = lab("iwd7", false);
        let (d1, d2) = (lab.devices[0].clone(), lab.devices[1].clone());
        let dir = Workdir::new("iwd7");
        let (cert, key) = (dir.text("cert.pem"), dir.text("key.pem"));
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=cam-cloud.example.test",
            ])
            .args(["-keyout", &key, "-out", &cert])
            .output()
            .expect("openssl req");
        assert!(made.status.success(), "openssl req: {}", String::from_utf8_lossy(&made.stderr));
        let (agent, events) = start_agent(&lab, &dir, 19487);
        // A real TLS server (OpenSSL's) on device 2, a real client (curl) on device 1 that names
        // the server in SNI, as a camera names its cloud.
        let mut server = Daemon::spawn(
            &lab,
            &d2.ns,
            &dir,
            "openssl-s_server",
            &["openssl", "s_server", "-accept", "8443", "-cert", &cert, "-key", &key, "-www", "-quiet"],
        );
        wait_listening(&lab, &d2.ns, "-t", 8443, &mut server);
        let resolve = format!("cam-cloud.example.test:8443:{}", d2.ip);
        run(
            &lab,
            &d1.ns,
            10,
            &[
                "curl",
                "-sS",
                "-k",
                "--fail",
                "--resolve",
                &resolve,
                "-o",
                "/dev/null",
                "https://cam-cloud.example.test:8443/",
            ],
        );

        let a = d1.mac.clone();
        let events = wait_events(
            &events,
            Duration::from_secs(15),
            &["tls"],
            &[("ClientHello from device 1 to port 8443 with SNI cam-cloud.example.test and TLS 1.3 offered", &|e| {
                e.kind() == "tls"
                    && same(e.s("src_mac"), &a)
                    && num_is(e.n("dst_port"), 8443.0)
                    && same(e.s("sni"), "cam-cloud.example.test")
                    && e.v.strs("versions").contains(&"TLS1.3")
            })],
        );
        assert_eq!(
            events.iter().filter(|e| e.kind() == "tls").count(),
            1,
            "one ClientHello:\n{}",
            show(&events, &["tls"])
        );
        check_metrics(&agent, &[(a.as_str(), "tls")]);
        // The server's name becomes the peer's name in the report.
        let bip = d2.ip.to_string();
        wait_report(&agent, "the peer named by SNI", |r| {
            device(r, &a)["peers"]
                .items()
                .iter()
                .any(|p| p["ip"].as_str() == Some(bip.as_str()) && p.strs("names").contains(&"cam-cloud.example.test"))
        });
    }
}
