from unpoison.utils.progress import Bar


def test_disabled_bar_is_a_no_op():
    bar = Bar(False, 10, "x")
    assert not bar.enabled
    bar.update(3, info="loss 1.0", description="y")  # must not raise
    bar.close()


def test_update_keeps_info_and_description_unless_given():
    with Bar(True, 10, "epoch 1", done=2) as bar:
        assert bar.enabled
        task = bar._p.tasks[0]
        bar.update(1, info="loss 0.500")
        bar.update(1)  # a step that does not read the loss keeps the last one shown
        assert (task.completed, task.fields["info"], task.description) == (4, "loss 0.500", "epoch 1")
        bar.update(2, description="epoch 2")
        assert (task.completed, task.fields["info"], task.description) == (6, "loss 0.500", "epoch 2")
    assert not bar.enabled  # closed
