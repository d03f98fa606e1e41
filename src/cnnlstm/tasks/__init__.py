"""cnnlstm.tasks"""
