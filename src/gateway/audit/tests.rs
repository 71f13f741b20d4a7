use super::*;

fn chain(n: u64) -> Vec<ChainRow> {
    let mut prev = GENESIS_HASH.to_owned();
    (1..=n)
        .map(|seq| {
            let body = format!(
                r#"{{"seq":{seq},"ts":"t","kind":"decision","n":{}}}"#,
                seq * 10
            );
            let hash = chain_hash(&prev, &body);
            let row = ChainRow {
                seq,
                body,
                prev_hash: Some(prev.clone()),
                hash: Some(hash.clone()),
            };
            prev = hash;
            row
        })
        .collect()
}

fn signer() -> AuditSigner {
    AuditSigner::from_seed([9; 32])
}

fn tampered_at(v: Verdict) -> u64 {
    match v {
        Verdict::Tampered { seq, .. } => seq,
        other => panic!("not tampered: {other:?}"),
    }
}

#[test]
fn an_untouched_chain_with_signed_checkpoints_is_intact() {
    let rows = chain(10);
    let s = signer();
    let cps = vec![
        s.checkpoint(4, rows[3].hash.as_deref().unwrap(), "t"),
        s.checkpoint(8, rows[7].hash.as_deref().unwrap(), "t"),
    ];
    assert_eq!(
        verify(rows, &cps, Some(&s.public_key())),
        Verdict::Intact {
            last_seq: 10,
            signed_up_to: Some(8),
            chained_from: Some(1),
            checkpoints: 2
        }
    );
}

#[test]
fn an_edit_a_drop_an_insert_a_swap_and_a_cut_tail_each_name_the_first_bad_seq() {
    let s = signer();
    let rows = chain(10);
    let cps = vec![s.checkpoint(8, rows[7].hash.as_deref().unwrap(), "t")];
    let key = s.public_key();
    let check = |rows: Vec<ChainRow>| tampered_at(verify(rows, &cps, Some(&key)));

    let mut edited = rows.clone();
    edited[4].body = edited[4].body.replace("50", "51");
    assert_eq!(check(edited), 5, "edited");

    let mut dropped = rows.clone();
    dropped.remove(6);
    assert_eq!(check(dropped), 7, "dropped");

    // An edit with every hash after it recomputed: the chain holds, the signature not.
    let mut rewritten = rows.clone();
    rewritten[2].body = rewritten[2].body.replace("30", "31");
    let mut prev = rewritten[1].hash.clone().unwrap();
    for row in &mut rewritten[2..] {
        row.prev_hash = Some(prev.clone());
        let h = chain_hash(&prev, &row.body);
        row.hash = Some(h.clone());
        prev = h;
    }
    assert_eq!(check(rewritten), 8, "rewritten up to a checkpoint");

    let mut swapped = rows.clone();
    let (a, b) = (swapped[2].body.clone(), swapped[3].body.clone());
    swapped[2].body = b;
    swapped[3].body = a;
    assert_eq!(check(swapped), 3, "swapped");

    let mut inserted = rows.clone();
    let extra = ChainRow {
        seq: 6,
        ..rows[5].clone()
    };
    inserted.insert(6, extra);
    assert_eq!(check(inserted), 6, "inserted");

    let cut: Vec<ChainRow> = rows[..7].to_vec();
    assert_eq!(check(cut), 8, "the tail after a signed checkpoint was cut");
}

#[test]
fn a_forged_or_foreign_checkpoint_is_caught() {
    let rows = chain(5);
    let s = signer();
    let mut forged = s.checkpoint(3, rows[2].hash.as_deref().unwrap(), "t");
    forged.hash = rows[3].hash.clone().unwrap();
    assert_eq!(tampered_at(verify(rows.clone(), &[forged], None)), 3);
    let other = AuditSigner::from_seed([1; 32]);
    let theirs = other.checkpoint(3, rows[2].hash.as_deref().unwrap(), "t");
    // Signed, but not by the key the auditor holds.
    assert_eq!(
        tampered_at(verify(
            rows.clone(),
            std::slice::from_ref(&theirs),
            Some(&s.public_key())
        )),
        3
    );
    assert!(matches!(
        verify(rows, &[theirs], None),
        Verdict::Intact { .. }
    ));
}

#[test]
fn events_from_before_the_chain_are_allowed_only_before_it() {
    let mut rows = chain(3);
    for row in &mut rows {
        row.seq += 2;
        row.body = row.body.replacen(
            &format!("\"seq\":{}", row.seq - 2),
            &format!("\"seq\":{}", row.seq),
            1,
        );
    }
    // Recompute, as the writer would have after an upgrade.
    let mut prev = GENESIS_HASH.to_owned();
    for row in &mut rows {
        row.prev_hash = Some(prev.clone());
        let h = chain_hash(&prev, &row.body);
        row.hash = Some(h.clone());
        prev = h;
    }
    let old = |seq: u64| ChainRow {
        seq,
        body: format!(r#"{{"seq":{seq}}}"#),
        prev_hash: None,
        hash: None,
    };
    let mut all = vec![old(1), old(2)];
    all.extend(rows.clone());
    assert!(matches!(
        verify(all.clone(), &[], None),
        Verdict::Intact {
            chained_from: Some(3),
            ..
        }
    ));
    // An unchained row after the chain began is a row that lost its hash.
    all.push(old(6));
    assert_eq!(tampered_at(verify(all, &[], None)), 6);
}
