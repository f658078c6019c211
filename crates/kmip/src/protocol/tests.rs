use super::*;

fn unhex(parts: &[&str]) -> Vec<u8> {
    hex::decode(parts.concat()).expect("test vectors are hex")
}

/// KMIP Test Cases v1.1 (OASIS, 2012), §16.1 "Test Case: Discover Versions", time 0: the
/// request without versions, as the document encodes it.
#[test]
fn discover_versions_request_matches_the_kmip_1_1_test_case() {
    let expected = unhex(&[
        "42007801000000604200770100000038420069010000002042006A0200000004000000010000000042006B02000000040",
        "00000010000000042000D0200000004000000010000000042000F010000001842005C05000000040000001E0000000042",
        "00790100000000",
    ]);
    let built = request(
        ProtocolVersion::new(1, 1),
        None,
        Operation::DiscoverVersions,
        discover_versions(&[]),
    );
    assert_eq!(built.encode(), expected);
}

/// The same test case's response: the server speaks 1.1 and 1.0.
#[test]
fn discover_versions_response_of_the_kmip_1_1_test_case_parses() {
    let bytes = unhex(&[
        "42007B01000000D042007A0100000048420069010000002042006A0200000004000000010000000042006B02000000040",
        "0000001000000004200920900000008000000004ED73ED742000D0200000004000000010000000042000F010000007842",
        "005C05000000040000001E0000000042007F0500000004000000000000000042007C01000000504200690100000020420",
        "06A0200000004000000010000000042006B02000000040000000100000000420069010000002042006A02000000040000",
        "00010000000042006B02000000040000000000000000",
    ]);
    let message = Ttlv::decode(&bytes).unwrap();
    let (version, result) = parse_response(&message).unwrap();
    assert_eq!(version, ProtocolVersion::new(1, 1));
    assert_eq!(result.status, ResultStatus::Success);
    assert_eq!(
        parse_discover_versions(result.payload.as_ref()),
        vec![ProtocolVersion::new(1, 1), ProtocolVersion::new(1, 0)]
    );
    // Re-encoding gives the document's bytes back.
    assert_eq!(message.encode(), bytes);
}

/// KMIP Use Cases v1.0 (OASIS, 2009), §3.1.2 "Register / Create / Get attributes / Destroy",
/// step 1 response: a Unique Identifier in the payload.
#[test]
fn register_response_of_the_kmip_1_0_use_case_parses() {
    let bytes = unhex(&[
        "42007B01000000B042007A0100000048420069010000002042006A0200000004000000010000000042006B02000000040",
        "0000000000000004200920900000008000000004AFBE7C442000D0200000004000000010000000042000F010000005842",
        "005C0500000004000000030000000042007F0500000004000000000000000042007C01000000304200940700000024613",
        "66562626236662D346335342D346262622D616432392D62653662616434656361643500000000",
    ]);
    let (version, result) = parse_response(&Ttlv::decode(&bytes).unwrap()).unwrap();
    assert_eq!(version, ProtocolVersion::new(1, 0));
    assert_eq!(
        parse_locate(result.payload.as_ref()),
        vec!["a6ebbb6f-4c54-4bbb-ad29-be6bad4ecad5".to_string()]
    );
}

fn response(items: Vec<Ttlv>) -> Ttlv {
    Ttlv::structure(
        tag::RESPONSE_MESSAGE,
        vec![
            Ttlv::structure(
                tag::RESPONSE_HEADER,
                vec![
                    ProtocolVersion::new(1, 4).to_ttlv(),
                    Ttlv::new(Tag(0x420092), Value::DateTime(0)),
                    Ttlv::integer(tag::BATCH_COUNT, 1),
                ],
            ),
            Ttlv::structure(tag::BATCH_ITEM, items),
        ],
    )
}

#[test]
fn failure_results_carry_reason_and_message() {
    let message = response(vec![
        Ttlv::enumeration(tag::OPERATION, Operation::Decrypt.code()),
        Ttlv::enumeration(tag::RESULT_STATUS, 1),
        Ttlv::enumeration(tag::RESULT_REASON, 0x01),
        Ttlv::text(tag::RESULT_MESSAGE, "Could not locate object: 7"),
    ]);
    let (_, result) = parse_response(&message).unwrap();
    assert_eq!(result.status, ResultStatus::OperationFailed);
    assert_eq!(result.reason, Some(0x01));
    assert_eq!(
        result.message.as_deref(),
        Some("Could not locate object: 7")
    );
    assert!(result.payload.is_none());
}

#[test]
fn responses_without_status_or_with_two_items_are_refused() {
    assert!(parse_response(&response(vec![])).is_err());
    let mut two = response(vec![Ttlv::enumeration(tag::RESULT_STATUS, 0)]);
    if let Value::Structure(items) = &mut two.value {
        let again = items[1].clone();
        items.push(again);
    }
    assert!(parse_response(&two).unwrap_err().contains("more than one"));
    let not_response = Ttlv::structure(tag::REQUEST_MESSAGE, vec![]);
    assert!(parse_response(&not_response).is_err());
}

#[test]
fn encrypt_request_carries_gcm_parameters_iv_and_aad_in_specification_order() {
    let payload = encrypt("42", b"seed", &[9; 12], b"aad");
    let tags: Vec<Tag> = payload.iter().map(|i| i.tag).collect();
    assert_eq!(
        tags,
        vec![
            tag::UNIQUE_IDENTIFIER,
            tag::CRYPTOGRAPHIC_PARAMETERS,
            tag::DATA,
            tag::IV_COUNTER_NONCE,
            tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA
        ]
    );
    let params = &payload[1];
    assert_eq!(
        params
            .find(tag::BLOCK_CIPHER_MODE)
            .unwrap()
            .as_enumeration(),
        Some(MODE_GCM)
    );
    assert_eq!(params.find(tag::TAG_LENGTH).unwrap().as_integer(), Some(16));
    // No AAD, no field.
    assert_eq!(encrypt("42", b"seed", &[9; 12], b"").len(), 4);
    let d = decrypt("42", b"ct", &[9; 12], &[1; 16], b"aad");
    assert_eq!(d.last().unwrap().tag, tag::AUTHENTICATED_ENCRYPTION_TAG);
    assert_eq!(d[4].tag, tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA);
}

#[test]
fn key_attributes_are_read_by_name_and_missing_ones_stay_unknown() {
    let attr = |name: &str, value: Value| {
        Ttlv::structure(
            tag::ATTRIBUTE,
            vec![
                Ttlv::text(tag::ATTRIBUTE_NAME, name),
                Ttlv::new(tag::ATTRIBUTE_VALUE, value),
            ],
        )
    };
    let payload = Ttlv::structure(
        tag::RESPONSE_PAYLOAD,
        vec![
            Ttlv::text(tag::UNIQUE_IDENTIFIER, "7"),
            attr("State", Value::Enumeration(state::ACTIVE)),
            attr("Initial Date", Value::DateTime(1_700_000_000)),
            attr("Deactivation Date", Value::DateTime(1_800_000_000)),
            attr("Cryptographic Usage Mask", Value::Integer(12)),
            attr("x-Custom", Value::TextString("ignored".into())),
        ],
    );
    let a = parse_key_attributes("7", Some(&payload));
    assert_eq!(a.state, Some(state::ACTIVE));
    assert_eq!(a.initial_date, Some(1_700_000_000));
    assert_eq!(a.deactivation_date, Some(1_800_000_000));
    assert_eq!(a.usage_mask, Some(12));
    assert_eq!(a.activation_date, None);
    assert_eq!(a.algorithm, None);
}

#[test]
fn credential_goes_in_the_request_header() {
    let r = request(
        GCM_WITH_AAD,
        Some(UsernamePassword {
            username: "svc",
            password: Some("pw"),
        }),
        Operation::Locate,
        vec![],
    );
    let header = r.find(tag::REQUEST_HEADER).unwrap();
    let value = header
        .find(tag::AUTHENTICATION)
        .and_then(|a| a.find(tag::CREDENTIAL))
        .and_then(|c| c.find(tag::CREDENTIAL_VALUE))
        .unwrap();
    assert_eq!(value.find(tag::USERNAME).unwrap().as_text(), Some("svc"));
    assert_eq!(value.find(tag::PASSWORD).unwrap().as_text(), Some("pw"));
    // Authentication sits between Protocol Version and Batch Count (§7.2).
    assert_eq!(header.items()[1].tag, tag::AUTHENTICATION);
}

#[test]
fn debug_of_a_request_does_not_show_the_password() {
    let r = request(
        GCM_WITH_AAD,
        Some(UsernamePassword {
            username: "svc-polykms",
            password: Some("s3cret-pw"),
        }),
        Operation::Locate,
        locate_active_keys("kube-kek"),
    );
    let shown = format!("{r:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    // Shown by length, like byte strings.
    assert!(shown.contains("TextString([9 bytes])"), "{shown}");
}
