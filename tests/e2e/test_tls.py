# End-to-end test of HTTPS: a self-signed certificate made here with the openssl command; the server
# started with --tls-cert/--tls-key answers login, ingest and reads over TLS, verified against that
# certificate; plain HTTP to the TLS port gets no HTTP answer (the connection fails cleanly) and the
# server goes on serving HTTPS.
#
# Run: /usr/bin/python3 tests/e2e/test_tls.py

import http.client
import os
import ssl
import subprocess
import tempfile

import harness as H
from harness import check, eq, short, test


@test(timeout=60)
def test_https_serves_and_plain_http_fails():
    d = tempfile.mkdtemp(prefix="medstream-e2e-tls-")
    H._temp_dirs.append(d)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    eq(r.returncode, 0, "openssl made a self-signed certificate")
    s = H.Server(extra_args=["--tls-cert", cert, "--tls-key", key], name="tls")
    s.ssl_ctx = ssl.create_default_context(cafile=cert)   # verifies the chain and the host name
    s.start()                                             # health check and admin login over HTTPS
    ans = s.ingest_ok([{"record_id": "tls-1", "name": "Tls Person", "dob": "1966-06-06"}])
    eq(ans["items"][0]["status"], "created", "ingest over HTTPS")
    got = s.get_json("/v1/records/tls-1")
    eq(got["fields"]["name"], "Tls Person", "read over HTTPS")
    # plain HTTP to the TLS port: no HTTP answer, and no crash
    plain = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    try:
        plain.request("GET", "/healthz")
        resp = plain.getresponse()
        status = resp.status
    except (OSError, http.client.HTTPException):
        status = None
    finally:
        plain.close()
    check(status is None, "plain HTTP to the TLS port got an HTTP answer (%s)" % status)
    eq(s.get("/healthz").status, 200, "HTTPS still served after the plain attempt")
    # a client that does not trust the certificate is refused by its own TLS layer
    strict = http.client.HTTPSConnection("127.0.0.1", s.port, timeout=5, context=ssl.create_default_context())
    try:
        strict.request("GET", "/healthz")
        strict.getresponse()
        refused = False
    except ssl.SSLError:
        refused = True
    finally:
        strict.close()
    check(refused, "an untrusted self-signed certificate was accepted by a default client")
    s.stop()


@test(timeout=60)
def test_a_private_key_others_may_read_is_named_in_a_warning():
    """serve read a --tls-key that every local user could read (mode 0644, as `openssl req -keyout` under
    umask 022 or a careless copy leaves it) without a word; the cluster key file is refused in that case.
    A key readable by others is warned about now, naming the file and the fix; a 0600 key is not."""
    d = tempfile.mkdtemp(prefix="medstream-e2e-tls-mode-")
    H._temp_dirs.append(d)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    eq(r.returncode, 0, "openssl made a self-signed certificate")
    for mode, warned in ((0o644, True), (0o600, False)):
        os.chmod(key, mode)
        s = H.Server(extra_args=["--tls-cert", cert, "--tls-key", key], name="tls-mode")
        s.ssl_ctx = ssl.create_default_context(cafile=cert)
        s.start()
        s.stop()
        with open(s.log_path) as f:
            text = f.read()
        said = "--tls-key %s is mode %04o" % (key, mode) in text and "chmod 600 %s" % key in text
        eq(said, warned, "a warning for a key of mode %04o: %s" % (mode, short(text[-600:])))


if __name__ == "__main__":
    H.main()
