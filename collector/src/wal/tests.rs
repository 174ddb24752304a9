use proptest::prelude::*;

use super::replay::parse_segment;
use super::*;

fn segment_with(records: &[(u8, i64, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(SEGMENT_MAGIC);
    bytes.extend_from_slice(&7u64.to_le_bytes());
    for (kind, ts, body) in records {
        encode_record(*kind, *ts, body, &mut bytes).expect("small record");
    }
    bytes
}

fn sample() -> Vec<(u8, i64, Vec<u8>)> {
    vec![
        (1, 10, b"first".to_vec()),
        (2, 20, vec![0u8; 300]),
        (3, 30, b"third record body".to_vec()),
    ]
}

#[test]
fn every_record_kind_round_trips_through_its_byte() {
    let mut seen = 0;
    for b in 0..=u8::MAX {
        if let Some(kind) = RecordKind::from_u8(b) {
            assert_eq!(kind as u8, b);
            seen += 1;
        }
    }
    assert_eq!(seen, 10, "a new RecordKind must be readable on replay");
}

#[test]
fn clean_segment_replays_every_record() {
    let replay = parse_segment(&segment_with(&sample()));
    assert_eq!(replay.outcome, ReplayOutcome::Clean);
    let got: Vec<_> = replay
        .records
        .iter()
        .map(|r| (r.kind, r.received_at_micros, r.body.clone()))
        .collect();
    assert_eq!(got, sample());
}

#[test]
fn truncation_at_every_byte_of_last_record_is_a_torn_tail() {
    let full = segment_with(&sample());
    let two = segment_with(&sample()[..2]).len();
    for cut in two..full.len() {
        let replay = parse_segment(&full[..cut]);
        assert_eq!(replay.records.len(), 2, "cut at {cut}");
        let expected = if cut == two {
            ReplayOutcome::Clean
        } else {
            ReplayOutcome::TornTail { offset: two as u64 }
        };
        assert_eq!(replay.outcome, expected, "cut at {cut}");
    }
}

#[test]
fn bad_checksum_on_last_record_is_torn_and_in_the_middle_is_corrupt() {
    let mut bytes = segment_with(&sample());
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let replay = parse_segment(&bytes);
    assert_eq!(replay.records.len(), 2);
    assert!(matches!(replay.outcome, ReplayOutcome::TornTail { .. }));

    let mut bytes = segment_with(&sample());
    let first_body = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 9;
    bytes[first_body] ^= 0xff;
    let replay = parse_segment(&bytes);
    assert!(replay.records.is_empty());
    assert!(
        matches!(replay.outcome, ReplayOutcome::Corrupt { offset, .. } if offset == SEGMENT_HEADER_LEN as u64),
        "{:?}",
        replay.outcome
    );
}

#[test]
fn zero_byte_and_header_only_segments_are_empty() {
    let replay = parse_segment(&[]);
    assert!(replay.records.is_empty());
    assert_eq!(replay.outcome, ReplayOutcome::Clean);
    let replay = parse_segment(&segment_with(&[]));
    assert!(replay.records.is_empty());
    assert_eq!(replay.outcome, ReplayOutcome::Clean);
    let replay = parse_segment(&SEGMENT_MAGIC[..5]);
    assert!(matches!(
        replay.outcome,
        ReplayOutcome::TornTail { offset: 0 }
    ));
}

#[test]
fn zero_filled_tail_is_torn() {
    let mut bytes = segment_with(&sample());
    bytes.extend_from_slice(&[0u8; 4096]);
    let replay = parse_segment(&bytes);
    assert_eq!(replay.records.len(), 3);
    assert!(matches!(replay.outcome, ReplayOutcome::TornTail { .. }));
}

#[test]
fn bad_magic_is_corrupt() {
    let mut bytes = segment_with(&sample());
    bytes[0] = b'X';
    let replay = parse_segment(&bytes);
    assert!(replay.records.is_empty());
    assert!(matches!(
        replay.outcome,
        ReplayOutcome::Corrupt { offset: 0, .. }
    ));
}

#[test]
fn writer_and_reader_agree_on_disk_and_checkpoint_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = WalDir::open(dir.path()).expect("open");
    assert_eq!(wal.checkpoint().expect("checkpoint"), 0);
    let mut w = SegmentWriter::create(wal.segment_path(3), 3).expect("create");
    let mut framed = Vec::new();
    encode_record(1, 5, b"hello", &mut framed).expect("encode");
    w.write(&[&framed]).expect("write");
    w.sync().expect("sync");
    assert_eq!(wal.segments().expect("list"), vec![3]);
    let replay = read_segment(&wal.segment_path(3)).expect("read");
    assert_eq!(replay.records.len(), 1);
    assert_eq!(replay.records[0].body, b"hello");
    // Replay is idempotent: reading again gives the same records.
    let again = read_segment(&wal.segment_path(3)).expect("read again");
    assert_eq!(again.records, replay.records);
    wal.write_checkpoint(3).expect("checkpoint");
    assert_eq!(wal.checkpoint().expect("checkpoint"), 3);
    let q = wal.quarantine(3).expect("quarantine");
    assert!(q.exists());
    wal.remove_segment(3).expect("remove");
    assert!(wal.segments().expect("list").is_empty());
}

proptest! {
    #[test]
    fn any_records_round_trip(records in proptest::collection::vec(
        (1u8..=6, any::<i64>(), proptest::collection::vec(any::<u8>(), 0..512)), 0..20)) {
        let replay = parse_segment(&segment_with(&records));
        prop_assert_eq!(replay.outcome, ReplayOutcome::Clean);
        let got: Vec<_> = replay.records.into_iter().map(|r| (r.kind, r.received_at_micros, r.body)).collect();
        prop_assert_eq!(got, records);
    }

    #[test]
    fn any_truncation_keeps_a_valid_prefix(
        records in proptest::collection::vec((1u8..=6, any::<i64>(), proptest::collection::vec(any::<u8>(), 0..128)), 1..10),
        cut_frac in 0.0f64..1.0,
    ) {
        let full = segment_with(&records);
        let cut = SEGMENT_HEADER_LEN + ((full.len() - SEGMENT_HEADER_LEN) as f64 * cut_frac) as usize;
        let replay = parse_segment(&full[..cut]);
        let corrupt = matches!(replay.outcome, ReplayOutcome::Corrupt { .. });
        prop_assert!(!corrupt);
        let got: Vec<_> = replay.records.into_iter().map(|r| (r.kind, r.received_at_micros, r.body)).collect();
        prop_assert_eq!(&got[..], &records[..got.len()]);
    }

    #[test]
    fn any_byte_flip_never_yields_a_wrong_record(
        records in proptest::collection::vec((1u8..=6, any::<i64>(), proptest::collection::vec(any::<u8>(), 1..64)), 1..6),
        pos_frac in 0.0f64..1.0,
    ) {
        let mut bytes = segment_with(&records);
        let pos = SEGMENT_HEADER_LEN + ((bytes.len() - SEGMENT_HEADER_LEN) as f64 * pos_frac) as usize;
        let pos = pos.min(bytes.len() - 1);
        bytes[pos] ^= 0x5a;
        let replay = parse_segment(&bytes);
        let got: Vec<_> = replay.records.into_iter().map(|r| (r.kind, r.received_at_micros, r.body)).collect();
        prop_assert!(got.len() < records.len());
        prop_assert_eq!(&got[..], &records[..got.len()]);
    }
}
