use super::*;

fn lit(value: &[u8], huff: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if huff {
        let enc = huffman::encode(value);
        encode_integer(&mut out, enc.len(), 7, 0x80);
        out.extend_from_slice(&enc);
    } else {
        encode_integer(&mut out, value.len(), 7, 0);
        out.extend_from_slice(value);
    }
    out
}

/// A first request block the way grpc clients write one: static refs, indexed literals.
fn first_block(authority: &[u8], huff: bool) -> Vec<u8> {
    let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
    b.push(0x44); // literal, incremental indexing, name = static 4 (:path)
    b.extend(lit(b"/v2.KeyManagementService/Status", huff));
    b.push(0x41); // name = static 1 (:authority)
    b.extend(lit(authority, huff));
    b.push(0x40); // new name
    b.extend(lit(b"te", huff));
    b.extend(lit(b"trailers", huff));
    b
}

fn decode_all(blocks: &[Vec<u8>]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut d = ::hpack::Decoder::new();
    blocks
        .iter()
        .map(|b| d.decode(b).expect("oracle decodes"))
        .collect()
}

fn authority_of(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    headers
        .iter()
        .find(|(n, _)| n == b":authority")
        .map(|(_, v)| v.clone())
        .unwrap()
}

fn rewrite(rw: &mut BlockRewriter, block: &[u8]) -> Vec<u8> {
    rw.process(block).unwrap().unwrap_or_else(|| block.to_vec())
}

#[test]
fn socket_path_authority_is_sanitised_and_later_references_follow() {
    for huff in [false, true] {
        let mut rw = BlockRewriter::default();
        let b1 = first_block(b"/var/run/kmsplugin/socket.sock", huff);
        // Second request: everything from the dynamic table.
        // Table now: 62 = te, 63 = :authority, 64 = :path.
        let b2 = vec![0x83, 0x86, 0x80 | 64, 0x80 | 63, 0x80 | 62];
        let out = vec![rewrite(&mut rw, &b1), rewrite(&mut rw, &b2)];
        assert_eq!(out[1], b2, "indexed block passes verbatim");
        let decoded = decode_all(&out);
        for headers in &decoded {
            assert_eq!(authority_of(headers), b"xvarxrunxkmspluginxsocket.sock");
            assert!(
                headers
                    .iter()
                    .any(|(n, v)| n == b":path" && v == b"/v2.KeyManagementService/Status")
            );
            assert!(headers.iter().any(|(n, v)| n == b"te" && v == b"trailers"));
        }
    }
}

#[test]
fn valid_authorities_pass_untouched() {
    for a in [
        &b"localhost"[..],
        b"kms.example:8080",
        b"[::1]:80",
        b"127.0.0.1",
    ] {
        let mut rw = BlockRewriter::default();
        assert_eq!(rw.process(&first_block(a, true)).unwrap(), None, "{a:?}");
    }
}

#[test]
fn percent_encoded_path_from_grpcio_is_sanitised() {
    let mut rw = BlockRewriter::default();
    let out = rewrite(&mut rw, &first_block(b"tmp%2Fkms.sock", true));
    assert_eq!(authority_of(&decode_all(&[out])[0]), b"tmpx2Fkms.sock");
}

#[test]
fn authority_as_new_name_literal_is_found() {
    let mut rw = BlockRewriter::default();
    let mut b = vec![0x00]; // without indexing, new name
    b.extend(lit(b":authority", true));
    b.extend(lit(b"a/b", false));
    let out = rewrite(&mut rw, &b);
    assert_eq!(authority_of(&decode_all(&[out])[0]), b"axb");
}

#[test]
fn eviction_and_size_updates_track_the_client_table() {
    let mut rw = BlockRewriter::default();
    let mut d = ::hpack::Decoder::new();
    // Fill the table beyond 4096 bytes so that early entries are evicted.
    for i in 0..60 {
        let mut b = vec![0x40];
        b.extend(lit(format!("x-h{i}").as_bytes(), true));
        b.extend(lit(&[b'v'; 40], false));
        let out = rewrite(&mut rw, &b);
        d.decode(&out).unwrap();
    }
    let mut b = first_block(b"/s.sock", true);
    let out = rewrite(&mut rw, &b);
    assert_eq!(authority_of(&d.decode(&out).unwrap()), b"xs.sock");
    // Size update to 0 empties the table; a reference past it is rejected by both.
    b = vec![0x20, 0x80 | 62];
    assert!(rw.process(&b).is_err());
    assert!(d.decode(&b).is_err());
}

#[test]
fn malformed_blocks_are_errors_not_panics() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0x80],                               // index 0
        vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // integer overflow / truncated
        vec![0x41, 0x85, 0x01],                   // string past end
        vec![0x41, 0x81, 0x00],                   // bad huffman padding
        vec![0x3f, 0xe2, 0x1f],                   // size update to 4097, above 4096
        vec![0x80 | 70],                          // past the dynamic table
    ];
    for c in cases {
        let mut rw = BlockRewriter::default();
        assert!(rw.process(&c).is_err(), "{c:x?}");
    }
}

#[test]
fn integers_round_trip() {
    for v in [0usize, 1, 30, 31, 126, 127, 128, 1337, 65535, 1 << 20] {
        for prefix in [4u32, 5, 6, 7] {
            let mut out = Vec::new();
            encode_integer(&mut out, v, prefix, 0);
            let mut r = Reader { buf: &out, pos: 0 };
            assert_eq!(r.integer(prefix).unwrap(), v);
            assert_eq!(r.pos, out.len());
        }
    }
}
