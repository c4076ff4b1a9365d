"""Training-data loaders, validation and the stratified split (no model needed)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from finetune.data import (
    DataError,
    Example,
    examples_from_records,
    filter_examples,
    load_examples,
    read_examples,
    split_examples,
    system_prompt_for,
    to_training_record,
)

CSV_ROWS = (
    "question,answer,category,difficulty\n"
    "What part covers unlicensed devices?,Part 15.,part15,easy\n"
    '"What is SAR, briefly?",Specific absorption rate.,rf_exposure,medium\n'
)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def issue_text(result) -> list[str]:
    return [str(issue) for issue in result.issues]


def test_csv_utf8(tmp_path):
    path = write(tmp_path / "qa.csv", CSV_ROWS)
    examples = load_examples(path)
    assert [e.question for e in examples] == [
        "What part covers unlicensed devices?",
        "What is SAR, briefly?",
    ]
    assert examples[1].answer == "Specific absorption rate."
    assert (examples[1].category, examples[1].difficulty) == ("rf_exposure", "medium")
    assert examples[0].source == f"{path}:2"
    assert examples[0].messages == [
        {"role": "user", "content": "What part covers unlicensed devices?"},
        {"role": "assistant", "content": "Part 15."},
    ]


def test_csv_with_bom(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + CSV_ROWS.encode())
    result = read_examples(path)
    assert (
        len(result.examples) == 2 and not result.issues
    )  # the BOM did not rename the first column


def test_csv_cp949(tmp_path):
    text = (
        CSV_ROWS
        + "무선 기기의 인증은 누가 합니까?,TCB가 인증합니다.,equipment_authorization,hard\n"
    )
    path = write(tmp_path / "korean.csv", text, "cp949")
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    examples = load_examples(path)
    assert examples[-1].question == "무선 기기의 인증은 누가 합니까?"
    assert examples[-1].answer == "TCB가 인증합니다."
    euc_kr = write(tmp_path / "euc.csv", "question,answer\n안녕하세요?,네.\n", "euc-kr")
    assert load_examples(euc_kr)[0].question == "안녕하세요?"


def test_csv_bad_rows_are_reported_with_line_and_field_and_skipped(tmp_path):
    rows = [CSV_ROWS.rstrip("\n")]
    rows += [f"Question {i}?,Answer {i}.,part15,easy" for i in range(200)]
    rows.insert(50, "broken,row,with,too,many,fields")
    rows.insert(100, ",an answer without a question,part15,easy")
    rows.insert(150, "A question without an answer?,,part15,easy")
    text = "\n".join(rows) + "\n"
    path = write(tmp_path / "many.csv", text)
    lines = text.splitlines()
    broken, no_question, no_answer = (
        lines.index(row) + 1 for row in (rows[50], rows[100], rows[150])
    )
    assert (broken, no_question, no_answer) == (53, 103, 153)
    result = read_examples(path)
    assert len(result.examples) == 202
    errors = [str(i) for i in result.errors]
    assert errors == [
        f"{path}:53: row: 6 fields, the header has 4 (unquoted comma?)",
        f"{path}:103: question: empty",
        f"{path}:153: answer: empty",
    ]
    with pytest.raises(DataError) as raised:
        read_examples(path, strict=True)
    assert f"{path}:103: question: empty" in str(raised.value)
    assert [(i.line, i.field) for i in raised.value.issues] == [
        (53, "row"),
        (103, "question"),
        (153, "answer"),
    ]


def test_csv_multiline_quoted_field_keeps_line_numbers(tmp_path):
    text = 'question,answer\n"Two\nline question?",A.\n,missing question\n'
    result = read_examples(write(tmp_path / "multi.csv", text))
    assert result.examples[0].question == "Two\nline question?"
    assert [(i.line, i.field) for i in result.errors] == [(4, "question")]


def test_csv_missing_column_names_the_header(tmp_path):
    with pytest.raises(DataError, match=r"bad.csv:1: header: missing column\(s\) answer"):
        read_examples(write(tmp_path / "bad.csv", "question,category\nq,c\n"))


def test_duplicates_and_empty_labels_are_reported(tmp_path):
    text = (
        CSV_ROWS
        + (
            "What part covers unlicensed devices?,Part 15.,part15,easy\n"  # line 4: exact duplicate
            "what part covers  unlicensed devices?,Part 15 of 47 CFR.,part15,easy\n"  # line 5: same question
            "Who grants certifications?,A TCB or the FCC.,,hard\n"  # line 6: empty category
        )
    )
    path = write(tmp_path / "dups.csv", text)
    result = read_examples(path)
    assert len(result.examples) == 4  # the exact duplicate is dropped, the rest kept
    assert issue_text(result) == [
        f"{path}:4: question: duplicate of {path}:2; skipped",
        f"{path}:5: question: same question as {path}:2 with another answer",
        f"{path}:6: category: empty",
    ]
    assert all(i.severity == "warning" for i in result.issues)
    assert result.examples[-1].category == "general"
    with pytest.raises(DataError, match=r"dups.csv:4: question: duplicate"):
        read_examples(path, strict=True)


def test_jsonl_instruction_format_and_malformed_lines(tmp_path):
    lines = [
        json.dumps(
            {
                "instruction": "Define SDoC.",
                "input": "",
                "output": "Supplier's Declaration of Conformity.",
            }
        ),
        json.dumps(
            {
                "instruction": "Summarize:",
                "input": "Part 15 text",
                "output": "A summary.",
                "category": "part15",
            }
        ),
        '{"instruction": "unterminated", "output": ',
        json.dumps({"instruction": "No output", "output": ""}),
        "",
        json.dumps({"something": "else"}),
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                ]
            }
        ),
    ]
    path = write(tmp_path / "data.jsonl", "\n".join(lines) + "\n")
    result = read_examples(path)
    assert [e.question for e in result.examples] == [
        "Define SDoC.",
        "Summarize:\n\nPart 15 text",
        "Hi",
    ]
    assert result.examples[1].category == "part15"
    assert [(i.line, i.field) for i in result.errors] == [(3, "json"), (4, "output"), (6, "record")]
    assert str(result.errors[0]).startswith(f"{path}:3: json: invalid JSON")


def test_json_conversations_with_item_lines(tmp_path):
    document = {
        "conversations": [
            {"prompt": "What is Part 15?", "response": "Rules for unlicensed RF devices."},
            {"prompt": "Empty response?", "response": ""},
            {"prompt": "What is Part 18?", "response": "ISM equipment.", "category": "ism"},
        ]
    }
    path = write(tmp_path / "conv.json", json.dumps(document, indent=2))
    result = read_examples(path)
    assert [e.question for e in result.examples] == ["What is Part 15?", "What is Part 18?"]
    assert result.examples[1].category == "ism"
    (issue,) = result.errors
    expected_line = (
        path.read_text().splitlines().index("    {", 5) + 1
    )  # the second item's opening line
    assert (issue.line, issue.field) == (expected_line, "response")
    assert result.examples[1].source == f"{path}:{expected_line + 4}"


def test_json_invalid_document_names_the_line(tmp_path):
    path = write(
        tmp_path / "broken.json", '{"conversations": [\n  {"prompt": "a",\n  "response" "b"}\n]}'
    )
    with pytest.raises(DataError, match=r"broken.json:3: json: invalid JSON"):
        read_examples(path)


def test_chat_messages_json_list_and_jsonl(tmp_path):
    good = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is an FCC ID?"},
            {"role": "assistant", "content": "The identifier on certified equipment."},
        ],
        "category": "equipment_authorization",
    }
    ends_with_user = {"messages": [{"role": "user", "content": "Unanswered?"}]}
    bad_role = {
        "messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]
    }
    path = write(tmp_path / "chat.json", json.dumps([good, ends_with_user, bad_role], indent=1))
    result = read_examples(path)
    assert len(result.examples) == 1 and result.examples[0].has_system
    assert [i.field for i in result.errors] == ["messages", "messages[0].role"]
    assert all(i.line is not None for i in result.errors)
    jsonl = write(
        tmp_path / "chat.jsonl", json.dumps(good) + "\n" + json.dumps(ends_with_user) + "\n"
    )
    result = read_examples(jsonl)
    assert len(result.examples) == 1
    assert (
        str(result.errors[0])
        == f"{jsonl}:2: messages: the last message must be the assistant's answer"
    )


def test_in_memory_records_as_the_api_sends_them():
    result = examples_from_records(
        [
            {"prompt": "What is Part 15?", "response": "Unlicensed devices."},
            {"prompt": "", "response": "x"},
        ]
    )
    assert [e.question for e in result.examples] == ["What is Part 15?"]
    assert str(result.errors[0]) == "request:2: prompt: empty"
    with pytest.raises(DataError):
        examples_from_records([{"prompt": "", "response": "x"}])  # nothing usable


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="unknown format"):
        read_examples(write(tmp_path / "data.txt", "hello"))
    with pytest.raises(DataError, match="no such file"):
        read_examples(tmp_path / "absent.csv")


def _examples(counts: dict[str, int]) -> list[Example]:
    return [
        Example.from_pair(
            f"{category} question {i}?", f"Answer {i}.", category, "easy" if i % 2 else "hard"
        )
        for category, n in counts.items()
        for i in range(n)
    ]


def test_split_is_stratified_and_deterministic():
    examples = _examples({"part15": 40, "rf_exposure": 20, "labeling": 10, "rare": 2})
    train, evaluation = split_examples(examples, eval_ratio=0.2, seed=7)
    assert Counter(e.category for e in evaluation) == {"part15": 8, "rf_exposure": 4, "labeling": 2}
    assert len(train) + len(evaluation) == len(examples)
    assert not {id(e) for e in train} & {id(e) for e in evaluation}
    again_train, again_eval = split_examples(list(reversed(examples)), eval_ratio=0.2, seed=7)
    assert [e.question for e in split_examples(examples, 0.2, 7)[1]] == [
        e.question for e in evaluation
    ]
    assert {e.question for e in again_eval} != set() and len(again_eval) == len(evaluation)
    other_train, other_eval = split_examples(examples, eval_ratio=0.2, seed=8)
    assert {e.question for e in other_eval} != {e.question for e in evaluation}
    assert split_examples(examples[:5], 0.2, 7)[1] == []  # too few to hold any out


def test_filter_by_category_and_difficulty():
    examples = _examples({"part15": 4, "rf_exposure": 4})
    assert {e.category for e in filter_examples(examples, ["RF_Exposure"])} == {"rf_exposure"}
    assert len(filter_examples(examples, None, ["hard"])) == 4
    with pytest.raises(DataError, match="No examples left"):
        filter_examples(examples, ["nothing"])


def test_training_record_gets_the_category_system_prompt():
    example = Example.from_pair("What is SAR?", "Specific absorption rate.", "rf_exposure")
    record = to_training_record(example)
    assert record["prompt"][0] == {"role": "system", "content": system_prompt_for("rf_exposure")}
    assert "RF exposure" in record["prompt"][0]["content"]
    assert record["completion"] == [{"role": "assistant", "content": "Specific absorption rate."}]
    assert system_prompt_for("unknown-category") == system_prompt_for(None)
    custom = to_training_record(example, {"default": "Custom."})
    assert custom["prompt"][0]["content"] == "Custom."


def test_prompt_format_of_examples():
    from finetune.data import PROMPT_FORMAT_CLOSED, PROMPT_FORMAT_RAG, prompt_format_of

    rag = Example(
        [
            {"role": "system", "content": "You answer ..."},
            {"role": "user", "content": "Sources:\n[1] (a.txt, § 1.1) Text.\n\nQuestion: Q?\n..."},
            {"role": "assistant", "content": "Text [1]."},
        ]
    )
    closed = Example.from_pair("What is Part 15?", "Unlicensed devices.")
    assert rag.prompt_format == PROMPT_FORMAT_RAG == "rag-evidence"
    assert closed.prompt_format == PROMPT_FORMAT_CLOSED == "closed-book"
    assert prompt_format_of([rag, rag]) == "rag-evidence"
    assert prompt_format_of([closed]) == "closed-book"
    assert prompt_format_of([rag, closed]) == "mixed"
    # A RAG record keeps its own system prompt: no closed-book one is put in front.
    assert to_training_record(rag)["prompt"][0]["content"] == "You answer ..."


def test_precision_follows_the_hardware_with_an_override(monkeypatch):
    import torch

    from core import modeling

    assert modeling.compute_dtype("cpu") == torch.float32
    assert modeling.compute_dtype("cpu", "bf16") == torch.bfloat16  # forced
    assert modeling.compute_dtype("cuda", "fp32") == torch.float32
    with pytest.raises(ValueError, match="precision"):
        modeling.compute_dtype("cpu", "fp8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for capability, expected in (
        ((7, 5), torch.float16),
        ((7, 0), torch.float16),
        ((8, 0), torch.bfloat16),
        ((9, 0), torch.bfloat16),
    ):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_, c=capability: c)
        assert modeling.compute_dtype("cuda") == expected, capability  # T4/V100 fp16, Ampere+ bf16
        config = modeling.bnb_config("4bit", "cuda")
        assert config.bnb_4bit_compute_dtype == expected
    assert modeling.precision_name(torch.float16) == "fp16"
