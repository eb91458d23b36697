"""The parent run's note names the task, how its splits were made and what the floor is."""

from rayprune.tracking.summary import search_note


def test_the_note_names_the_task_the_split_rule_and_the_floor_rule():
    data = {"task": "squad", "task_type": "extractive_qa", "train_examples": 900, "eval_examples": 210,
            "notes": ["eval carved from train_files: 10 of 48 groups by 'title' (eval_fraction 0.2, seed 0)"],
            "floor_rule": "the best fixed-position span"}
    note = search_note(name="s", metric="f1", front_rows=[], all_rows=[], hypervolume=0.0, run_links={},
                       run_names={}, reference_value=0.6, floor=0.05, data=data)
    assert "**Task**: squad (extractive_qa), 900 train / 210 eval rows" in note
    assert "10 of 48 groups by 'title'" in note
    assert "**Floor** (the best fixed-position span): f1 0.0500" in note


def test_a_note_without_data_keeps_the_classification_wording():
    note = search_note(name="s", metric="accuracy", front_rows=[], all_rows=[], hypervolume=0.0, run_links={},
                       run_names={}, floor=0.5)
    assert "**Task**" not in note
    assert "**Floor** (best constant predictor on the eval split): accuracy 0.5000" in note
